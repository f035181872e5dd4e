// The reference system's documented device flow (1nce-coap-endpoint.md §2-§4, SPEC §6-§7) with
// the client its documentation uses, node-coap-client: GET /bootstrap over coap://, then POST
// over coaps:// with the returned identity (ICCID) and pre-shared key.
//
//   node onboard.js HOST COAP_PORT COAPS_PORT TOPIC PAYLOAD
//
// Prints one JSON object: {"bootstrap":"2.05","identity":…,"psk":…,"url":…,"post":"2.04"}, or
// {"error":…}. The coaps:// port comes from the command line because the test server listens
// on an ephemeral one; the URL the bootstrap returned is reported as is.
"use strict";
const { CoapClient } = require("node-coap-client");

function code(response) {
  return `${response.code.major}.${String(response.code.minor).padStart(2, "0")}`;
}

async function main() {
  const [host, coapPort, coapsPort, topic, payload] = process.argv.slice(2);
  const out = {};
  const boot = await CoapClient.request(`coap://${host}:${coapPort}/bootstrap`, "get", undefined,
                                        { retransmit: false });
  out.bootstrap = code(boot);
  if (out.bootstrap !== "2.05") return out;
  [out.identity, out.psk, out.url] = boot.payload.toString().split(",");
  CoapClient.setSecurityParams(host, { psk: { [out.identity]: out.psk } });
  const post = await CoapClient.request(`coaps://${host}:${coapsPort}/?t=${topic}`, "post",
                                        Buffer.from(payload), { retransmit: false });
  out.post = code(post);
  return out;
}

const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out" }));
  process.exit(3);
}, 20000);
main().then(
  (out) => {
    console.log(JSON.stringify(out));
    clearTimeout(timer);
    CoapClient.reset();
    process.exit(0);
  },
  (error) => {
    console.log(JSON.stringify({ error: String(error && error.message ? error.message : error) }));
    process.exit(1);
  });
