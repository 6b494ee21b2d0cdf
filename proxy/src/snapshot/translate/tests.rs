//! Tests for resource validation.
