"""The voice server: the browser client's files, the WebSocket endpoint and the health and
metrics endpoints on one port (``voicecore serve``).

* ``app``: ``VoiceServer``, which accepts connections, enforces the limits and runs one
  engine ``Session`` per client;
* ``admission``: the capacity and the admission books (slots taken at ``hello``, pending
  connections, connections per client address);
* ``calibration``: what one conversation costs with the configured pipeline, measured at
  start-up;
* ``memory``: resident memory, and giving it back after a burst;
* ``transport``: ``WebSocketTransport``, one connection speaking protocol v1;
* ``websocket``: a lean WebSocket layer (websockets' sans-I/O core over Trio streams);
* ``http``: static files and the headers every response carries;
* ``cli``: the ``voicecore`` command.
"""

from voicecore.server.app import VoiceServer as VoiceServer

__all__ = ["VoiceServer"]
