"""The Celery consumer of every worker: Celery's own, surviving the loss of its Redis connection.

Celery 5.7.0 (with kombu 5.7.0) closes a connection it has just collected when the broker goes away: the close
restores the unacknowledged messages through the transport that `collect()` already released, which raises
`AttributeError` (`'NoneType' object has no attribute 'hostname'`). That is not a connection error, so the
worker treats it as unrecoverable and exits, and with it every child and the tasks they were running. With
`acks_late` there is always an unacknowledged message while a worker is busy, so a Redis restart took every busy
worker down (found by `bench/faults.py`). The connection is already gone at that point and nothing is left to
restore (a restarted Redis is empty, and an unacknowledged message of a Redis that comes back is restored by its
visibility timeout), so the error is logged and the consumer reconnects as it does after any connection loss.
"""

import logging

from celery.worker.consumer import Consumer

logger = logging.getLogger(__name__)


class BrokerLossConsumer(Consumer):
    """Celery's consumer, reconnecting instead of exiting when closing the lost connection fails (see above)."""

    def on_connection_error_after_connected(self, exc):
        """Celery's handling of a lost connection, with the failed close of the dead connection ignored."""
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            logger.warning("closing the lost broker connection failed (%r); reconnecting", error)
            self.connection = None
