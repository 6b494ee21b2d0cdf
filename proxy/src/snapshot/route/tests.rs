//! Table tests for routing decisions.
