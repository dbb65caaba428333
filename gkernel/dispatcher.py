"""The dispatcher: control first, then lanes of requests served by greenlets.

Requests are queued by the channel readers with a priority and served in
arrival order within it:

* ``CONTROL`` requests are handled inline by the dispatcher greenlet, before
  anything else, and are short.
* ``SHELL`` requests run one at a time, each in a greenlet of its own -- the
  cell's execution greenlet; while it waits on gevent I/O (or is time-sliced,
  see :mod:`gkernel.cpuwatch`), the dispatcher keeps serving control.
* each kernel subshell (JEP 91; :meth:`Dispatcher.add_lane`) is one more
  lane like ``SHELL``: its requests run one at a time, beside the other
  lanes' -- a greenlet each, no thread.
* ``COMM`` messages from the front end (``comm_open``, ``comm_msg``,
  ``comm_close``) run one at a time too, in a lane of their own: beside a
  running cell, so a cell that waits sees a widget move. A shell or
  subshell request still waits for the comm messages that arrived before
  it, so a cell sees the state the front end had when it was sent.

Requests that arrived while a CPU-bound cell held the hub are still unread in
the sockets when it ends, so before starting a shell request the dispatcher
lets the readers take in what was delivered (:func:`settle`): a
control request sent before it is then served first.
"""

import functools
from collections import deque

import gevent
from gevent.event import Event

__all__ = ["Dispatcher", "CONTROL", "SHELL", "COMM", "settle"]

CONTROL, SHELL, COMM = 0, 1, 2


def settle(timeout=0.05):
    """Let greenlets woken by I/O that already arrived (the socket readers) run first.

    ``gevent.idle`` returns once the loop has polled and run everything
    pending; bounded because greenlets spinning on ``sleep(0)`` keep the loop
    from ever idling.
    """
    with gevent.Timeout(timeout, False):
        gevent.idle()


class _Lane:
    """Requests served one at a time, each in its own greenlet, in arrival order."""

    __slots__ = ("queue", "greenlet", "running", "item")

    def __init__(self):
        #: (arrival number, request) pairs
        self.queue = deque()
        self.greenlet = None
        #: the arrival number of the request being served, and the request
        self.running = self.item = None

    def holds_before(self, arrival):
        """Whether a request that arrived before *arrival* is queued or being served here."""
        return (self.running is not None and self.running < arrival) or (bool(self.queue) and self.queue[0][0] < arrival)


class Dispatcher:
    """Serves queued requests with ``handle(item)``; hub-thread only."""

    def __init__(self, handle, spawn, log):
        self._handle = handle
        #: ``spawn(func, item, lane)`` starts the greenlet of a request of a lane (not CONTROL)
        self._spawn = spawn
        self.log = log
        self._control = deque()
        self._lanes = {SHELL: _Lane(), COMM: _Lane()}
        self._arrivals = 0
        self._wakeup = Event()
        #: the dispatcher's own greenlet, once started
        self.greenlet = None

    @property
    def shell_greenlet(self):
        """The greenlet running the current shell request, if any."""
        return self._lanes[SHELL].greenlet

    @property
    def shell_request(self):
        """The shell request being served, if any."""
        return self._lanes[SHELL].item

    def start(self):
        self.greenlet = gevent.spawn(self._run)

    def stop(self):
        """Stop serving; requests still running are killed."""
        glets = [self.greenlet, *(lane.greenlet for lane in self._lanes.values())]
        gevent.killall([g for g in glets if g is not None], timeout=1)

    def put(self, lane, item):
        """Queue *item* for *lane*: CONTROL, SHELL, COMM or a subshell id (:meth:`add_lane`)."""
        if lane == CONTROL:
            self._control.append(item)
        else:
            self._arrivals += 1
            self._lanes[lane].queue.append((self._arrivals, item))
        self._wakeup.set()

    def add_lane(self, key):
        """A new lane (a subshell's), served beside the others."""
        self._lanes[key] = _Lane()

    def remove_lane(self, key):
        """End a lane: its running request is killed; returns the requests still queued in it."""
        lane = self._lanes.pop(key)
        if lane.greenlet is not None:
            lane.greenlet.kill(block=False)
        return [item for _, item in lane.queue]

    def has_lane(self, key):
        return key in self._lanes

    def lanes(self):
        """The keys of the subshells' lanes, in creation order."""
        return [key for key in self._lanes if key not in (SHELL, COMM)]

    def shell_pending(self):
        """How many shell requests wait behind the running one."""
        return len(self._lanes[SHELL].queue)

    def _startable(self, key, lane, comms):
        """Whether *lane*'s next request may start: the lane is free and, for a shell lane, no
        comm message that arrived before that request is still waiting or running."""
        if not lane.queue or lane.greenlet is not None:
            return False
        return key == COMM or not comms.holds_before(lane.queue[0][0])

    def _next(self):
        """(lane, arrival number, item) of the next request to start."""
        control, comms = self._control, self._lanes[COMM]
        while True:
            if control:
                return CONTROL, None, control.popleft()
            for key, lane in list(self._lanes.items()):
                if not self._startable(key, lane, comms):
                    continue
                if key != COMM:
                    settle()  # let control requests that were already delivered go first
                    if control or self._lanes.get(key) is not lane or not self._startable(key, lane, comms):
                        break
                return (key, *lane.queue.popleft())
            else:
                self._wakeup.clear()
                self._wakeup.wait()

    def _run(self):
        while True:
            key, arrival, item = self._next()
            if key == CONTROL:
                self._serve(item)
            else:
                lane = self._lanes[key]
                lane.running, lane.item = arrival, item
                lane.greenlet = self._spawn(functools.partial(self._serve_in_lane, lane=lane), item, key)

    def _serve(self, item):
        try:
            self._handle(item)
        except Exception:  # the handler answers errors itself; this is a bug guard
            self.log.exception("unhandled error while serving a request")

    def _serve_in_lane(self, item, lane):
        try:
            self._serve(item)
        finally:
            lane.greenlet = lane.running = lane.item = None
            self._wakeup.set()
