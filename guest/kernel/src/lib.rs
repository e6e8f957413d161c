//! The guest kernel: built from Debian's linux-source-6.1 with the fragment in this folder, cached by content.
