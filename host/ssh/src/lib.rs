//! gatehouse-ssh
