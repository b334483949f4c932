// Session ids: 64 random bits in hex, cut from a pooled buffer, so that a connection costs no
// getrandom call of its own (one per 512 sessions).
import { randomBytes } from "node:crypto";

const POOL_BYTES = 4096;
const ID_BYTES = 8;

export class SessionIds {
  private pool = Buffer.alloc(0);
  private at = POOL_BYTES;

  next(): string {
    if (this.at === POOL_BYTES) {
      this.pool = randomBytes(POOL_BYTES);
      this.at = 0;
    }
    this.at += ID_BYTES;
    return this.pool.toString("hex", this.at - ID_BYTES, this.at);
  }
}
