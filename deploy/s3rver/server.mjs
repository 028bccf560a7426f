// s3rver with S3's conditional writes, for the dev stack's Tansu broker (gxami_runtime.devstack_s3).
//
// Tansu's object-store engine keeps its watermarks, batches and consumer-group state consistent
// with conditional PUTs (If-None-Match: * to create, If-Match: <etag> to update, retrying on 412).
// s3rver 3.7 ignores both headers and overwrites, so two concurrent writers could silently lose a
// record or an offset. This wrapper checks the precondition against the stored object's ETag and
// answers 412 PreconditionFailed as S3 does, holding a per-key lock from the check until the write
// is done, so check and write are one step.
//
//   node server.mjs --directory DIR --address 127.0.0.1 --port PORT --bucket NAME
import S3rver from "s3rver";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    directory: { type: "string" },
    address: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    bucket: { type: "string", multiple: true, default: [] },
  },
});
if (!values.directory) {
  console.error("server.mjs: --directory is required");
  process.exit(2);
}

const server = new S3rver({
  directory: values.directory,
  address: values.address,
  port: Number(values.port),
  silent: true,
  configureBuckets: values.bucket.map((name) => ({ name, configs: [] })),
});

const locks = new Map();
async function withLock(key, fn) {
  const previous = locks.get(key) ?? Promise.resolve();
  let release;
  const mine = new Promise((resolve) => (release = resolve));
  const tail = previous.then(() => mine);
  locks.set(key, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (locks.get(key) === tail) locks.delete(key);
  }
}

const counts = { conditional: 0, refused: 0 };
const bare = (etag) => etag.trim().replace(/^W\//, "").replace(/^"|"$/g, "");

async function conditionalPut(ctx, next) {
  const ifMatch = ctx.get("if-match");
  const ifNoneMatch = ctx.get("if-none-match");
  const [, bucket, ...rest] = ctx.path.split("/");
  if (ctx.method !== "PUT" || (!ifMatch && !ifNoneMatch) || !bucket || rest.length === 0) {
    return next();
  }
  const key = decodeURIComponent(rest.join("/"));
  counts.conditional += 1;
  return withLock(`${bucket}/${key}`, async () => {
    let etag = null;
    try {
      etag = (await server.store.getMetadata(bucket, key)).etag;
    } catch {
      etag = null; // no such object
    }
    const failed =
      (ifNoneMatch && etag !== null && (ifNoneMatch.trim() === "*" || bare(ifNoneMatch) === bare(etag))) ||
      (ifMatch && (etag === null || (ifMatch.trim() !== "*" && bare(ifMatch) !== bare(etag))));
    if (failed) {
      counts.refused += 1;
      ctx.status = 412;
      ctx.type = "application/xml";
      ctx.body =
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>' +
        "<Message>At least one of the pre-conditions you specified did not hold</Message>" +
        `<Key>${key.replace(/[<>&]/g, "")}</Key></Error>`;
      return;
    }
    await next();
  });
}

// After the request logger, before the XML encoder and the routes (Koa composes on listen).
server.middleware.splice(1, 0, conditionalPut);
const { address, port } = await server.run();
console.log(`s3rver listening on ${address}:${port}`);
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => {
    console.log(`conditional puts: ${counts.conditional}, refused (412): ${counts.refused}`);
    await server.close();
    process.exit(0);
  });
}
