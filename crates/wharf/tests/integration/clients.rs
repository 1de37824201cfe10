//! docker, skopeo and podman pushing to and pulling from wharf.
