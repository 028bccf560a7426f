#!/usr/bin/env node
// PGlite (PostgreSQL in WASM) with TimescaleDB, served on the PostgreSQL wire protocol.
//
// For tests of the TimescaleDB schema path without Docker:
//   node deploy/pglite/server.mjs --port 0 [--host 127.0.0.1] [--db memory://]
// prints one line `READY <host> <port>` on stdout once clients can connect, and stops on
// SIGTERM/SIGINT or when its stdin closes (so a crashed parent never leaves it behind).
//
// PGlite is a single session: pglite-socket serves one client at a time and queues the others.
// COPY does not work through the socket; callers INSERT.
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    db: { type: "string", default: "memory://" },
    debug: { type: "boolean", default: false },
  },
});

const db = await PGlite.create(values.db, { extensions: { timescaledb } });
const server = new PGLiteSocketServer({
  db,
  port: Number.parseInt(values.port, 10),
  host: values.host,
  debug: values.debug,
  connectionQueueTimeout: 60_000,
});
server.addEventListener("error", (e) => console.error("pglite-socket error:", e.detail));

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    await server.stop();
    await db.close();
  } finally {
    process.exit(code);
  }
}
process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));
process.stdin.on("end", () => stop(0));
process.stdin.on("error", () => stop(0));
process.stdin.resume();

server.addEventListener("listening", (e) => {
  const { host, port } = e.detail;
  process.stdout.write(`READY ${host} ${port}\n`);
});
await server.start();
