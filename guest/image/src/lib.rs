//! The image store: OCI image layout under $SANDBOX_HOME, layers unpacked once and shared.
