//! rtnetlink operations every plugin needs (links, addresses, routes), over a synchronous socket.
