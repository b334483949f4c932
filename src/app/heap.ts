// The V8 heap a sidecar runs in, tuned for a process whose garbage is mostly chunk buffers (external
// memory) and whose own objects mostly live as long as it does. Call before anything else is loaded.
//
// What V8 does by default with parley's heap (measured, README "Bulk under limits"): a 25 MB old
// generation (1,000 rules, modules, configuration) is above V8's 8 MB threshold for incremental
// marking, so V8 keeps a limit on it; and external memory allocated since the last Mark-Compact (the
// chunks' backing stores) counts against that limit (Heap::OldGenerationSpaceAvailable). Because a
// proxy allocates few objects per chunk, V8 sizes the headroom for a slow allocator (factor 1.1-1.4,
// about 9 MB), so a bulk transfer runs a Mark-Compact every few MB of buffered chunks: 25-50 per GiB,
// each marking the whole heap. Separately, loading the configuration grows the new space to its
// maximum (64 MiB per semi-space without pointer compression, as Node is built), which then never
// fills during a transfer: no scavenge frees the chunks' buffers, and a headroom smaller than the new
// space starts incremental marking at once after every Mark-Compact. A bare Node pipe, with a 6 MB
// heap, is below the threshold and has neither problem.
//
// So: the new space stays at its initial size (a growth factor of 1; V8 reads the factor each time it
// grows the space, SemiSpaceNewSpace::Grow), and the old generation's limit after each Mark-Compact is
// 3x what survived (V8's own factor ranges from 1.1 to 4 by allocation rate; it is read each time a
// limit is computed). Measured: 0-2 Mark-Compacts per GiB, as the pipe. Cost: an old generation may
// grow to 3x its live size before a Mark-Compact, where V8 alone would allow 1.1-4x.
//
// An operator who sets these flags on the command line (or the semi-space ones in NODE_OPTIONS) is
// left as configured.
import { setFlagsFromString } from "node:v8";

/** Each flag parley sets, and the operator's flags that leave it alone. */
const TUNING: readonly { flag: string; unlessSet: RegExp }[] = [
  { flag: "--semi-space-growth-factor=1", unlessSet: /--(?:(?:max|min)[-_]semi[-_]space[-_]size|semi[-_]space[-_]growth[-_]factor)\b/ },
  { flag: "--heap-growing-percent=200", unlessSet: /--heap[-_]growing[-_]percent\b/ },
];

/** Sets each flag of TUNING the operator has not set; returns the flags it set. */
export function tuneHeap(execArgv: readonly string[] = process.execArgv, nodeOptions: string | undefined = process.env.NODE_OPTIONS): string[] {
  const operator = [...execArgv, nodeOptions ?? ""].join(" ");
  const set = TUNING.filter((t) => !t.unlessSet.test(operator)).map((t) => t.flag);
  for (const flag of set) setFlagsFromString(flag);
  return set;
}
