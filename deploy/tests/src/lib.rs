//! No code: the checks of the deployment files are this crate's tests (tests/).
