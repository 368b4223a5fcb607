"""The trajectory fragment: the one Arrow schema that rollout actors emit and learners consume.

A fragment is T steps of E environments from one rollout actor, all acted with one policy
version. It is one ``pyarrow.RecordBatch`` of ``(T + 1) * E`` rows in time-major order
(row ``t * E + e``), so every column reshapes to ``[T + 1, E, ...]`` without a copy.

Rows with ``t < T`` are *steps*. The last E rows (``t == T``) are *bootstrap rows*: they hold
the observation that follows the fragment (the learner needs its value for the V-trace
bootstrap), with zeros in the action, log-probability, reward, done and truncation-value
fields. A bootstrap row is the same observation as row ``t == 0`` of the actor's next
fragment, so consumers of per-step data (the learner's losses, the annotator) read only the
first ``T * E`` rows.

Columns, grouped as the schema's field metadata also records:

    step     glyph_crop      fixed_shape_tensor<int16>[C, C]   glyph ids around the agent
             blstats         fixed_shape_tensor<float32>[27]   NLE bottom-line statistics
             message_bytes   fixed_shape_tensor<uint8>[256]    the message as NUL-padded bytes
             message         string                            the message, decoded and stripped
             action          int64                             action taken at this step
             behaviour_logp  float32                           log pi_behaviour(action | obs)
             reward          float32                           extrinsic reward of the step
             terminated      bool                              episode ended (no bootstrap)
             truncated       bool                              episode cut by a time limit
             truncation_value float32                          V_behaviour of the observation
                                                               the time limit cut off (0 unless
                                                               truncated): V-trace bootstraps
                                                               from it
             behaviour_value float32                           V_behaviour of this row's
                                                               observation, as the acting
                                                               policy valued it (0 for a
                                                               random policy): PPO's clipped
                                                               value loss clips around it
    episode  env_index       int32                             env slot in the actor's vector
             episode_id      int64                             unique in the run: actor << 32 | n
             step            int32                             step of this obs in its episode
                                                               (0 = first obs: reset the core)
             msg_count       int32                             occurrences of this message in
                                                               the episode so far, this one
                                                               included (ONI's msg_count)

Schema metadata (``oniray.*`` keys, UTF-8 values unless noted): schema version, actor id,
fragment id, policy version, T, E, and the recurrent core state at the fragment's start
(``oniray.initial_core_state``: raw little-endian float32 bytes of shape ``[E, H]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = "3"  # 2: truncation_value; 3: behaviour_value
BLSTATS_SIZE = 27  # NLE's NLE_BLSTATS_SIZE
MESSAGE_SIZE = 256  # NLE's message buffer
MAX_GLYPH = 5976  # NLE's MAX_GLYPH: ids are in [0, MAX_GLYPH]; the crop pads with MAX_GLYPH

# Field name -> group, for readers of the schema (kept in each field's metadata too).
STEP_FIELDS = (
    "glyph_crop",
    "blstats",
    "message_bytes",
    "message",
    "action",
    "behaviour_logp",
    "reward",
    "terminated",
    "truncated",
    "truncation_value",
    "behaviour_value",
)
EPISODE_FIELDS = ("env_index", "episode_id", "step", "msg_count")

_META_PREFIX = "oniray."


def fragment_schema(crop_size: int) -> pa.Schema:
    """The Arrow schema of a fragment whose glyph crop is ``crop_size`` x ``crop_size``."""

    def field(name: str, type_: pa.DataType, group: str) -> pa.Field:
        return pa.field(name, type_, nullable=False, metadata={"group": group})

    tensor = pa.fixed_shape_tensor
    fields = [
        field("glyph_crop", tensor(pa.int16(), [crop_size, crop_size]), "step"),
        field("blstats", tensor(pa.float32(), [BLSTATS_SIZE]), "step"),
        field("message_bytes", tensor(pa.uint8(), [MESSAGE_SIZE]), "step"),
        field("message", pa.string(), "step"),
        field("action", pa.int64(), "step"),
        field("behaviour_logp", pa.float32(), "step"),
        field("reward", pa.float32(), "step"),
        field("terminated", pa.bool_(), "step"),
        field("truncated", pa.bool_(), "step"),
        field("truncation_value", pa.float32(), "step"),
        field("behaviour_value", pa.float32(), "step"),
        field("env_index", pa.int32(), "episode"),
        field("episode_id", pa.int64(), "episode"),
        field("step", pa.int32(), "episode"),
        field("msg_count", pa.int32(), "episode"),
    ]
    return pa.schema(fields, metadata={_META_PREFIX + "schema_version": SCHEMA_VERSION})


@dataclass(frozen=True)
class FragmentMeta:
    """What a fragment says about itself (its schema metadata), decoded."""

    actor_id: int
    fragment_id: int
    policy_version: int
    length: int  # T
    num_envs: int  # E
    initial_core_state: np.ndarray  # float32 [E, H]

    def encode(self) -> dict[bytes, bytes]:
        state = np.ascontiguousarray(self.initial_core_state, dtype="<f4")
        text = {
            "schema_version": SCHEMA_VERSION,
            "actor_id": str(self.actor_id),
            "fragment_id": str(self.fragment_id),
            "policy_version": str(self.policy_version),
            "length": str(self.length),
            "num_envs": str(self.num_envs),
            "core_state_shape": ",".join(str(d) for d in state.shape),
        }
        meta = {(_META_PREFIX + k).encode(): v.encode() for k, v in text.items()}
        meta[(_META_PREFIX + "initial_core_state").encode()] = state.tobytes()
        return meta

    @classmethod
    def decode(cls, schema: pa.Schema) -> FragmentMeta:
        raw = schema.metadata or {}

        def get(key: str) -> bytes:
            try:
                return raw[(_META_PREFIX + key).encode()]
            except KeyError:
                raise ValueError(f"not an oniray fragment: schema metadata lacks {key!r}") from None

        version = get("schema_version").decode()
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"fragment schema version {version} is not supported (expected {SCHEMA_VERSION})"
            )
        shape = tuple(int(d) for d in get("core_state_shape").decode().split(",") if d)
        state = np.frombuffer(get("initial_core_state"), dtype="<f4").reshape(shape)
        return cls(
            actor_id=int(get("actor_id")),
            fragment_id=int(get("fragment_id")),
            policy_version=int(get("policy_version")),
            length=int(get("length")),
            num_envs=int(get("num_envs")),
            initial_core_state=state,
        )


class FragmentBuilder:
    """Collects T + 1 time steps of E environments into fresh arrays, then one RecordBatch.

    The rollout worker writes observations with :meth:`put_obs` (``t`` in ``0..T``) and the
    step results with :meth:`put_step` (``t`` in ``0..T-1``). :meth:`build` hands the arrays
    to Arrow without copying them; the builder must not be reused afterwards.
    """

    def __init__(self, *, length: int, num_envs: int, crop_size: int) -> None:
        rows = (length + 1, num_envs)
        self.length, self.num_envs, self.crop_size = length, num_envs, crop_size
        self.glyph_crop = np.zeros((*rows, crop_size, crop_size), np.int16)
        self.blstats = np.zeros((*rows, BLSTATS_SIZE), np.float32)
        self.message_bytes = np.zeros((*rows, MESSAGE_SIZE), np.uint8)
        self.messages: list[str] = [""] * (rows[0] * rows[1])
        self.action = np.zeros(rows, np.int64)
        self.behaviour_logp = np.zeros(rows, np.float32)
        self.reward = np.zeros(rows, np.float32)
        self.terminated = np.zeros(rows, np.bool_)
        self.truncated = np.zeros(rows, np.bool_)
        self.truncation_value = np.zeros(rows, np.float32)
        self.behaviour_value = np.zeros(rows, np.float32)
        self.env_index = np.broadcast_to(np.arange(num_envs, dtype=np.int32), rows).copy()
        self.episode_id = np.zeros(rows, np.int64)
        self.step = np.zeros(rows, np.int32)
        self.msg_count = np.zeros(rows, np.int32)

    def put_obs(
        self,
        t: int,
        *,
        glyph_crop: np.ndarray,
        blstats: np.ndarray,
        message_bytes: np.ndarray,
        messages: list[str],
        episode_id: np.ndarray,
        step: np.ndarray,
        msg_count: np.ndarray,
    ) -> None:
        self.glyph_crop[t] = glyph_crop
        self.blstats[t] = blstats
        self.message_bytes[t] = message_bytes
        self.messages[t * self.num_envs : (t + 1) * self.num_envs] = messages
        self.episode_id[t] = episode_id
        self.step[t] = step
        self.msg_count[t] = msg_count

    def put_step(
        self,
        t: int,
        *,
        action: np.ndarray,
        behaviour_logp: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        truncation_value: np.ndarray | None = None,
        behaviour_value: np.ndarray | None = None,
    ) -> None:
        self.action[t] = action
        self.behaviour_logp[t] = behaviour_logp
        self.reward[t] = reward
        self.terminated[t] = terminated
        self.truncated[t] = truncated
        if truncation_value is not None:
            self.truncation_value[t] = truncation_value
        if behaviour_value is not None:
            self.behaviour_value[t] = behaviour_value

    def build(self, meta: FragmentMeta) -> pa.RecordBatch:
        schema = fragment_schema(self.crop_size)
        n = (self.length + 1) * self.num_envs

        def tensor(values: np.ndarray, field_name: str) -> pa.Array:
            ext_type = schema.field(field_name).type
            flat = pa.array(values.reshape(-1), type=ext_type.storage_type.value_type)
            storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[2:])))
            return pa.ExtensionArray.from_storage(ext_type, storage)

        columns = [
            tensor(self.glyph_crop, "glyph_crop"),
            tensor(self.blstats, "blstats"),
            tensor(self.message_bytes, "message_bytes"),
            pa.array(self.messages, pa.string()),
            pa.array(self.action.reshape(n)),
            pa.array(self.behaviour_logp.reshape(n)),
            pa.array(self.reward.reshape(n)),
            pa.array(self.terminated.reshape(n)),
            pa.array(self.truncated.reshape(n)),
            pa.array(self.truncation_value.reshape(n)),
            pa.array(self.behaviour_value.reshape(n)),
            pa.array(self.env_index.reshape(n)),
            pa.array(self.episode_id.reshape(n)),
            pa.array(self.step.reshape(n)),
            pa.array(self.msg_count.reshape(n)),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=schema.with_metadata(
            {**schema.metadata, **meta.encode()}
        ))


def step_rows(fragment: pa.RecordBatch) -> pa.RecordBatch:
    """The fragment without its bootstrap rows (a zero-copy slice)."""
    meta = FragmentMeta.decode(fragment.schema)
    return fragment.slice(0, meta.length * meta.num_envs)


def step_captions(fragment: pa.RecordBatch) -> pa.Array:
    """The distinct messages of the step rows: what the annotator is sent to judge (bootstrap
    rows repeat the next fragment's first row, so they are left to that fragment)."""
    return pc.unique(step_rows(fragment).column("message"))


def validate_fragment(fragment: pa.RecordBatch) -> FragmentMeta:
    """Check a batch against the fragment contract; return its metadata or raise ValueError."""
    meta = FragmentMeta.decode(fragment.schema)
    crop = fragment.schema.field("glyph_crop").type.shape[0]
    expected = fragment_schema(crop)
    if not fragment.schema.remove_metadata().equals(expected.remove_metadata()):
        raise ValueError(f"fragment schema mismatch:\n{fragment.schema}\nexpected:\n{expected}")
    rows = (meta.length + 1) * meta.num_envs
    if fragment.num_rows != rows:
        raise ValueError(f"fragment has {fragment.num_rows} rows, expected (T+1)*E = {rows}")
    return meta
