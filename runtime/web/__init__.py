"""The HTTP side of the runtime: a live view of ``edge-mtl run --serve`` (page, MJPEG, status,
server-sent events, health) and the inference endpoint of ``edge-mtl serve`` (``POST /infer``).

Standard library only (``http.server.ThreadingHTTPServer``): no dependency beyond the runtime's
numpy, OpenCV and onnxruntime. Safe by default: loopback unless told otherwise, a token for any
other address, limits on viewers, body size and request rate (:mod:`.guard`).
"""
