//! Tests of the HTTP/1.1 client codec against raw sockets.
