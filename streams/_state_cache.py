"""The recently used customers' journey states, kept as models beside the bytes they are stored as.

Decoding a stored state into a `CustomerState` was a tenth of the worker's time in B1, and
the customer of one event is often the customer of one of the next (a session: a view, a cart,
an order). This is Kafka Streams' record cache in front of RocksDB, for reads: the table stays
the truth. An entry is used only while the table holds exactly the bytes it was made from, so
a recovery, a rebalance, a discarded batch or any other writer can never make it serve a
state the table does not hold. Keeping a state as the model the engine made is sound because
nothing a state holds changes meaning in its JSON round trip (`tests/journeys/test_golden.py`
replays every library scenario both ways), and because the engine never changes a state it is
given (it works on a copy: `journeys._state.working_copy`, `Run.own`).
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from journeys import CustomerState, decode_state


class _Entry(msgspec.Struct, gc=False):
    # not a tuple: the cyclic collector walks a tuple at least once, and a stream of new
    # customers churns every entry (see `journeys._state.CustomerState`)
    stored: bytes
    state: CustomerState


class StateCache:
    """Up to `capacity` states, least recently used out first; capacity 0 keeps none."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, stored: bytes) -> CustomerState | None:
        """The state kept for `key` if it was made from `stored`, the table's bytes now."""
        entry = self._entries.get(key)
        if entry is None or entry.stored != stored:
            return None
        self._entries.move_to_end(key)
        return entry.state

    def decoded(self, key: bytes, stored: bytes) -> CustomerState:
        """The state `stored` encodes: the one kept for `key` if made from these bytes, else
        decoded from them and kept."""
        state = self.get(key, stored)
        if state is None:
            state = decode_state(stored)
            self.put(key, stored, state)
        return state

    def put(self, key: bytes, stored: bytes, state: CustomerState) -> None:
        """Keep `state`, which `stored` encodes; the caller must not change it afterwards."""
        if self._capacity == 0:
            return
        self._entries[key] = _Entry(stored, state)
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._entries.pop(key, None)
