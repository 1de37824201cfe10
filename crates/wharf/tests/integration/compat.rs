//! registry:2 compatibility of the storage: Distribution 2.8.2 and wharf serving each other's directories; crash safety.
