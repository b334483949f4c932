// A negotiating route's request, encoded once per configuration: its frame (transport tls, sent on
// each connection) and its `parley-request` value (multiplexed, on each stream). The route's
// `negotiate` settings fix both, so a new configuration (new settings object) encodes them anew; one
// over its bound is refused, as every connection or stream of the route would be, without encoding it
// again each time.
import type { OutboundConfig } from "../../config/resources.js";
import { requestFrame } from "../../negotiation/client.js";
import { NegotiationError } from "../../negotiation/frame.js";
import { requestValue } from "../../negotiation/headers.js";

type RouteRequest = NonNullable<OutboundConfig["negotiate"]>;

const frames = new WeakMap<RouteRequest, Buffer | NegotiationError>();
const values = new WeakMap<RouteRequest, string | NegotiationError>();

/** The route's request frame; throws NegotiationError when it is over the bound. */
export function routeRequestFrame(n: RouteRequest): Buffer {
  return encodedOnce(frames, n, requestFrame);
}

/** The route's `parley-request` value; throws NegotiationError when it is over the bound. */
export function routeRequestValue(n: RouteRequest): string {
  return encodedOnce(values, n, requestValue);
}

function encodedOnce<T>(cache: WeakMap<RouteRequest, T | NegotiationError>, n: RouteRequest, encode: (n: RouteRequest) => T): T {
  let value = cache.get(n);
  if (value === undefined) {
    try {
      value = encode(n);
    } catch (e) {
      if (!(e instanceof NegotiationError)) throw e;
      value = e;
    }
    cache.set(n, value);
  }
  if (value instanceof NegotiationError) throw value;
  return value;
}
