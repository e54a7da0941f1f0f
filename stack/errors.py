class StackError(Exception):
    """A local service could not be set up, started or stopped; the message says what to do."""


class PortInUseError(StackError):
    def __init__(self, host: str, port: int, variable: str) -> None:
        super().__init__(
            f"port {port} on {host} is already in use; stop whatever listens there "
            f"or choose another port with {variable}"
        )
        self.port = port
