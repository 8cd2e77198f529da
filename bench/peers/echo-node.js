// echo-node.js - an RFC 862 echo server on Node.js's net module (libuv, epoll underneath):
// the reference point for "a well-known event loop" in bench/peers/run. Usage: node echo-node.js PORT
'use strict';
const net = require('net');
const port = Number(process.argv[2] || 65432);
const server = net.createServer({ noDelay: true }, (sock) => {
	// pipe() honours backpressure: reading pauses while the write side is full.
	sock.pipe(sock);
	sock.on('error', () => sock.destroy());
});
server.listen(port, '127.0.0.1', () => process.stderr.write(`listening 127.0.0.1:${port}\n`));
process.on('SIGTERM', () => process.exit(0));
