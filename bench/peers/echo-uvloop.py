"""echo-uvloop.py - an RFC 862 echo server on asyncio with uvloop (libuv), the loop behind the
best-known published echo benchmark: a reference point in bench/peers/run.
Usage: python3 echo-uvloop.py PORT"""
import asyncio
import signal
import socket
import sys

import uvloop


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.transport.write(data)

    # Backpressure: stop reading while the peer does not drain what we write.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
    sys.stderr.write(f"listening 127.0.0.1:{port}\n")
    sys.stderr.flush()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


uvloop.install()
asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 65432))
