//! netaudio configuration.
