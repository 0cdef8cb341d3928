"""Starts a tf.data service dispatcher or worker, for training with `train.data_service`.

    # one machine: the dispatcher
    python -m ondevice_vision.train.data_service --role=dispatcher --port=5050
    # every preprocessing machine: a worker (it must see the data at the same paths)
    python -m ondevice_vision.train.data_service --role=worker --dispatcher=HOST:5050 --port=5051
    # the trainer
    ondevice-train --config=... --config.train.data_service=grpc://HOST:5050

The trainer builds its input pipeline as usual and sends the graph to the dispatcher; workers
run it and stream batches back. Workers need no copy of this package's code, only the data
files (the graph names them by path) and the same TensorFlow version. The process serves until
it is killed.
"""

from __future__ import annotations

import tensorflow as tf
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_enum("role", "dispatcher", ["dispatcher", "worker"], "What to start.")
flags.DEFINE_integer("port", 5050, "Port to serve on.")
flags.DEFINE_string("dispatcher", "", "Worker only: the dispatcher's HOST:PORT.")
flags.DEFINE_integer(
    "worker_timeout_ms", None, "Dispatcher only: a worker silent this long is dropped."
)
flags.DEFINE_string(
    "worker_address", "", "Worker only: HOST:PORT the dispatcher tells trainers (default: own)."
)


def start_dispatcher(
    port: int = 0, worker_timeout_ms: int | None = None
) -> tf.data.experimental.service.DispatchServer:
    """`worker_timeout_ms`: how long a silent worker counts as alive (TensorFlow's default if
    None); its unfinished work is then handed to the others."""
    return tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(
            port=port, worker_timeout_ms=worker_timeout_ms
        )
    )


def start_worker(
    dispatcher: str, port: int = 0, worker_address: str | None = None
) -> tf.data.experimental.service.WorkerServer:
    """`dispatcher`: HOST:PORT (a grpc:// prefix is accepted)."""
    address = dispatcher.removeprefix("grpc://")
    return tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=address, port=port, worker_address=worker_address or None
        )
    )


def main(argv):
    del argv
    if FLAGS.role == "dispatcher":
        server = start_dispatcher(FLAGS.port, FLAGS.worker_timeout_ms)
        logging.info("tf.data dispatcher serving at %s", server.target)
    else:
        if not FLAGS.dispatcher:
            raise app.UsageError("--role=worker needs --dispatcher=HOST:PORT")
        server = start_worker(FLAGS.dispatcher, FLAGS.port, FLAGS.worker_address)
        logging.info("tf.data worker on port %d for dispatcher %s", FLAGS.port, FLAGS.dispatcher)
    server.join()


if __name__ == "__main__":
    app.run(main)
