// Seeded randomness for the baseline: every random choice (edit positions, which notes
// change, which trace windows become notes) comes from a `Random` made from `--seed`,
// so two runs with the same flags make the same documents and the same edits.
// Owns: the generator. Must not: read the clock or Math.random.

/** mulberry32: small, fast, good enough to pick positions; not for cryptography. */
export class Random {
  #state;

  /** `stream` separates independent uses of one seed (notes vs. edits vs. picks). */
  constructor(seed, stream = 0) {
    this.#state = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
    for (let i = 0; i < 4; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next() {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  below(n) {
    return Math.floor(this.next() * n);
  }

  /** A lowercase letter, standing in for one keystroke. */
  letter() {
    return String.fromCharCode(97 + this.below(26));
  }

  /** `k` distinct integers from [0, n), in the order drawn. */
  sample(n, k) {
    if (k > n) throw new Error(`cannot pick ${k} distinct items out of ${n}`);
    const picked = new Set();
    while (picked.size < k) picked.add(this.below(n));
    return [...picked];
  }
}
