// A negotiating outbound route's request is encoded once per configuration: the same frame and
// `parley-request` value for every connection and stream of a route, a new one for new settings.
import { describe, expect, it } from "vitest";
import { decodeFrame, FrameType, NegotiationError } from "../src/negotiation/frame.js";
import { routeRequestFrame, routeRequestValue } from "../src/proxy/outbound/request.js";

describe("a route's request", () => {
  it("is one frame and one header value per settings object, each decoding to the request", () => {
    const settings = { roles: ["reader"], purpose: "nightly export" };
    const frame = routeRequestFrame(settings);
    expect(routeRequestFrame(settings)).toBe(frame);
    expect(decodeFrame(frame)).toMatchObject({ type: FrameType.Request, payload: { roles: ["reader"], purpose: "nightly export" } });
    const value = routeRequestValue(settings);
    expect(routeRequestValue(settings)).toBe(value);
    expect(JSON.parse(Buffer.from(value, "base64url").toString("utf8"))).toEqual({ roles: ["reader"], purpose: "nightly export" });
    // New settings (a new configuration) are encoded anew.
    const next = { roles: ["writer"] };
    expect(decodeFrame(routeRequestFrame(next))?.payload).toEqual({ roles: ["writer"] });
  });

  it("over its bound is refused every time, naming the bound", () => {
    const settings = { roles: [], approvalToken: "x".repeat(20_000) };
    for (let i = 0; i < 2; i++) {
      expect(() => routeRequestFrame(settings)).toThrow(NegotiationError);
      expect(() => routeRequestFrame(settings)).toThrow(/over 16384/);
      expect(() => routeRequestValue(settings)).toThrow(/at most 7168/);
    }
  });
});
