// Turning raw stamps and counters into the figures printed in the JSON result.
// Owns: percentiles, nanosecond-to-millisecond conversion, byte deltas. Pure functions.

/** Milliseconds between two process.hrtime.bigint() stamps (strings or bigints). */
export const msBetween = (from, to) => Number(BigInt(to) - BigInt(from)) / 1e6;

const round = (x, digits = 3) => (x === null ? null : Number(x.toFixed(digits)));

/** {count, p50_ms, p99_ms, mean_ms, min_ms, max_ms}; percentiles by nearest rank. */
export function latencyRow(samplesMs) {
  const s = [...samplesMs].sort((a, b) => a - b);
  const rank = (p) => (s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : null);
  return {
    count: s.length,
    p50_ms: round(rank(50)),
    p99_ms: round(rank(99)),
    mean_ms: round(s.length ? s.reduce((a, b) => a + b, 0) / s.length : null),
    min_ms: round(s[0] ?? null),
    max_ms: round(s.at(-1) ?? null),
  };
}

/** Bytes between two wire() snapshots of the websocket server. `rx` is what the server read
 * (client → server), `tx` what it wrote (server → client). */
export function wireDelta(before, after) {
  const up = after.rx - before.rx;
  const down = after.tx - before.tx;
  return { client_to_server: up, server_to_client: down, total: up + down };
}

export { round };
