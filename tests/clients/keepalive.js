// A device that keeps its DTLS session: node-coap-client (the reference system's documented
// client) with keepAlive, driven line by line from stdin so that a test can restart the
// server between two requests of one session.
//
//   node keepalive.js HOST COAPS_PORT IDENTITY PSK
//   stdin:  "post TOPIC PAYLOAD" per line
//   stdout: one JSON object per request: {"code":"2.04"} or {"error":…}
//
// node-coap-client caches one DTLS connection per origin while keepAlive is set: every
// request after the first goes on the same session, with no new handshake.
"use strict";
const readline = require("readline");
const { CoapClient } = require("node-coap-client");

const [host, port, identity, psk] = process.argv.slice(2);
CoapClient.setSecurityParams(host, { psk: { [identity]: psk } });

function code(response) {
  return `${response.code.major}.${String(response.code.minor).padStart(2, "0")}`;
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  const [command, topic, ...rest] = line.trim().split(" ");
  if (command !== "post") return;
  queue = queue.then(async () => {
    try {
      const response = await Promise.race([
        CoapClient.request(`coaps://${host}:${port}/?t=${topic}`, "post",
                           Buffer.from(rest.join(" ")), { keepAlive: true, confirmable: true }),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timed out")), 15000)),
      ]);
      console.log(JSON.stringify({ code: code(response) }));
    } catch (error) {
      console.log(JSON.stringify({ error: String(error && error.message ? error.message : error) }));
    }
  });
});
lines.on("close", () => {
  queue.then(() => {
    CoapClient.reset();
    process.exit(0);
  });
});
