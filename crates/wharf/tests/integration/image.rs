//! The wharf container image, run under the Docker Engine like registry:2.
