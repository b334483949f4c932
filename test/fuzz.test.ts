// Property tests (fast-check): random input to every parser never throws anything but its own
// documented error, and never hangs.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { configSchema } from "../src/config/schema.js";
import { ConfigError, parseWith, YamlSource } from "../src/config/source.js";
import { compilePush } from "../src/control/agent/validate.js";
import { resourcesFromWire } from "../src/control/wire.js";
import { DerError, splitDer } from "../src/spiffe/der.js";
import { BundleFormatError, parseSpiffeBundle } from "../src/spiffe/spiffebundle.js";
import { SpiffeId, SpiffeIdError } from "../src/spiffe/spiffeid.js";
import { CertificateParseError, parseCertificate } from "../src/spiffe/x509cert.js";
import { parseLine } from "../src/telemetry/tail.js";
import { decodeFrame, encodeFrame, FrameType, NegotiationError, readRequest } from "../src/negotiation/frame.js";

const RUNS = { numRuns: 400 };

function onlyThrows(fn: () => unknown, ...allowed: Array<new (...a: never[]) => Error>): void {
  try {
    fn();
  } catch (e) {
    if (!allowed.some((A) => e instanceof A)) throw e;
  }
}

const idChars = fc.constantFrom(..."abcXYZ019.-_/:%?#@ ~é".split(""));

describe("SPIFFE ID parser", () => {
  it("on any string: a SpiffeId whose text round-trips, or a SpiffeIdError naming a rule", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.string({ unit: idChars }).map((s) => `spiffe://${s}`),
        ),
        (s) => {
          const r = SpiffeId.tryParse(s);
          if (r instanceof SpiffeIdError) expect(r.rule).toMatch(/^[a-z_]+$/);
          else expect(SpiffeId.parse(r.toString()).equals(r)).toBe(true);
        },
      ),
      RUNS,
    );
  });
});

describe("configuration loader", () => {
  it("on any text: a parsed configuration or a ConfigError", () => {
    const yamlish = fc.string({ unit: fc.constantFrom(..."ab:- \n\t[]{}&*!|>'\"#,0".split("")), maxLength: 200 });
    fc.assert(
      fc.property(fc.oneof(fc.string(), yamlish), (text) => {
        onlyThrows(() => {
          const src = YamlSource.parse("fuzz.yaml", text);
          parseWith(configSchema, src.toJS(), src);
        }, ConfigError);
      }),
      RUNS,
    );
  });

  it("on any JSON-like value: schema issues only", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => onlyThrows(() => parseWith(configSchema, v, YamlSource.parse("f.yaml", "a: 1")), ConfigError)),
      RUNS,
    );
  });

  it("deep nesting and huge inputs are errors, not crashes", () => {
    const deep = "a: " + "[".repeat(100_000) + "]".repeat(100_000);
    expect(() => parseWith(configSchema, YamlSource.parse("deep.yaml", deep).toJS(), YamlSource.parse("deep.yaml", deep))).toThrow(ConfigError);
    const deepMap = Array.from({ length: 5000 }, (_, i) => " ".repeat(i) + "k:").join("\n");
    expect(() => {
      const src = YamlSource.parse("deepmap.yaml", deepMap);
      parseWith(configSchema, src.toJS(), src);
    }).toThrow(ConfigError);
  });
});

describe("frame and format parsers", () => {
  it("splitDer: buffers or DerError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => onlyThrows(() => splitDer(Buffer.from(b)), DerError)),
      RUNS,
    );
  });

  it("parseCertificate: facts or CertificateParseError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => onlyThrows(() => parseCertificate(Buffer.from([0x30, 0x82, ...b])), CertificateParseError)),
      { numRuns: 200 },
    );
  });

  it("parseSpiffeBundle: a document or BundleFormatError", () => {
    const keyish = fc.record(
      {
        use: fc.constantFrom("x509-svid", "jwt-svid", "other", 3),
        kty: fc.constantFrom("EC", "RSA", "OKP", "X"),
        kid: fc.string(),
        x5c: fc.array(fc.string()),
        crv: fc.string(),
        x: fc.string(),
        y: fc.string(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
          fc.array(keyish).map((keys) => JSON.stringify({ keys })),
        ),
        (text) => onlyThrows(() => parseSpiffeBundle(text, "fuzz"), BundleFormatError),
      ),
      RUNS,
    );
  });

  it("control-plane resources: a compiled push or a ConfigError (NACK), whatever the shape", () => {
    const resource = fc.record({
      name: fc.string({ maxLength: 8 }),
      kind: fc.constantFrom("listener", "policy", "trust_bundle", "role", "attestor", "attestation", "settings", "bogus"),
      listener: fc.jsonValue(),
      policy: fc.jsonValue(),
      trust_bundle: fc.jsonValue(),
      role: fc.jsonValue(),
      attestor: fc.jsonValue(),
      attestation: fc.jsonValue(),
      settings: fc.jsonValue(),
    });
    fc.assert(
      fc.property(fc.array(resource, { maxLength: 6 }), fc.string({ maxLength: 5 }), (rs, v) => {
        onlyThrows(() => resourcesFromWire(rs), ConfigError);
        onlyThrows(() => compilePush(rs, v), ConfigError);
      }),
      RUNS,
    );
  });

  it("Struct values of any shape and depth convert without throwing", async () => {
    const { fromStruct, toStruct } = await import("../src/control/wire.js");
    fc.assert(
      fc.property(fc.anything(), (v) => {
        onlyThrows(() => fromStruct(v as never));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 4 })), (o) => {
        expect(fromStruct(toStruct(o))).toEqual(o);
      }),
      RUNS,
    );
  });

  it("negotiation frames: a frame, a need for more bytes, or a NegotiationError", () => {
    const frameish = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 4 }), fc.jsonValue()).map(([v, t, p]) => {
        const body = Buffer.from(JSON.stringify(p) ?? "null");
        const head = Buffer.alloc(10);
        head.write("PRLY", 0, "latin1");
        head[4] = v;
        head[5] = t;
        head.writeUInt32BE(body.length, 6);
        return Buffer.concat([head, body]);
      }),
    );
    fc.assert(
      fc.property(frameish, fc.nat(80), (b, cut) => {
        onlyThrows(() => {
          const f = decodeFrame(b.subarray(0, cut));
          if (f?.type === FrameType.Request) readRequest(f.payload);
        }, NegotiationError);
      }),
      RUNS,
    );
    fc.assert(
      fc.property(
        fc.record({ roles: fc.array(fc.string({ minLength: 1, maxLength: 10 }), { maxLength: 5 }), purpose: fc.string({ maxLength: 50 }) }),
        (req) => {
          const f = decodeFrame(encodeFrame(FrameType.Request, req))!;
          expect(readRequest(f.payload).roles).toEqual([...new Set(req.roles)]);
        },
      ),
      RUNS,
    );
  });

  it("parley tail's line reader: a record or nothing", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (line) => onlyThrows(() => parseLine(line)),
      ),
      RUNS,
    );
  });
});
