"""The transport: Engine.IO and Socket.IO on aiohttp, with a fast websocket path (a bare
asyncio Protocol after the handshake, frames written straight to the socket, a bounded
outbox when it cannot take them). Delivery reaches a connection only through
`SocketServer.writer`."""
