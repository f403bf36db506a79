//! Operating sluice: the command line, the admin socket, metrics and
//! Postfix-style log lines. Never handles message bytes beyond headers.
