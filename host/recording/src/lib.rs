//! gatehouse-recording
