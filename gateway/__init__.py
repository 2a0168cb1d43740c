"""The HTTP/JSON gateway: routes built from the ``google.api.http`` annotations.

``python -m gateway`` serves every annotated method of the taskgate services
over one shared gRPC channel, transcoding as grpc-gateway v2 does.
"""
