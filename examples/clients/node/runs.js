// Runs as resources, and conversations, from Node.js: loads protos/ at run time
// (no codegen) and, against one agent,
//
//   1. starts a run in the background (StartRun), watches it (WatchRun) and drops
//      the stream after a few events;
//   2. finds it again (GetRun, ListRuns), rejoins it from the next event index,
//      cancels it (Cancel says truthfully whether there was anything to cancel);
//   3. holds a conversation: two Runs with the same session_id, then GetSession;
//   4. makes a call that fails and decodes the ErrorDetail of its rich status
//      (the google.rpc.Status in the trailer grpc-status-details-bin).
//
//   node runs.js [ADDRESS] [TASK] [FIRST_TURN] [SECOND_TURN]
//
// ADDRESS defaults to 127.0.0.1:50051 (the seed mesh's manager), TASK (the
// background run) to the seed task, FIRST_TURN to TASK, SECOND_TURN to a follow-up
// only the first turn makes sense of. Each line it prints starts with a word in
// capitals, for scripts to read; it exits 1 if anything but step 4 failed.
'use strict';

const crypto = require('crypto');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs'); // what proto-loader parses .proto files with

const SEED_TASK = 'In which year was gRPC open-sourced? Remember the year in the memo, ' +
  'then tell me the smallest prime factor of that year.';
const [address = '127.0.0.1:50051', task = SEED_TASK, firstTurn = task,
  secondTurn = 'And what is the largest prime factor of that year?'] = process.argv.slice(2);
const KEEP = 3; // events read before the first stream is dropped

const PROTOS = path.join(__dirname, '..', '..', '..', 'protos');
const definition = protoLoader.loadSync('smolmesh/v1/agent.proto', {
  includeDirs: [PROTOS], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const mesh = grpc.loadPackageDefinition(definition).smolmesh.v1;
const client = new mesh.AgentService(address, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 60_000);

// A unary call as a promise.
const call = (method, request) => new Promise((resolve, reject) => {
  client[method](request, { deadline: deadline() }, (err, reply) => (err ? reject(err) : resolve(reply)));
});

// Streams a run's events from startIndex to onEvent, until the run ends or onEvent
// returns false (the stream is then dropped, as a client that goes away would).
const watch = (runId, startIndex, onEvent) => new Promise((resolve, reject) => {
  const stream = client.WatchRun({ run_id: runId, start_index: startIndex }, { deadline: deadline() });
  let dropped = false;
  stream.on('data', ({ events }) => {
    for (const event of events) {
      if (dropped) return;
      if (onEvent(event) === false) {
        dropped = true;
        stream.cancel();
      }
    }
  });
  stream.on('error', (err) => (dropped && err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
  stream.on('end', resolve);
});

// The rich status: google.rpc.Status, whose details are Anys (two messages, defined
// here as google/rpc/status.proto does), one of them a packed smolmesh.v1.ErrorDetail.
const rpc = protobuf.parse(`syntax = "proto3"; package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }`,
{ keepCase: true }).root;
const types = new protobuf.Root();
types.resolvePath = (origin, target) => path.join(PROTOS, target); // google/protobuf/* are built in
types.loadSync('smolmesh/v1/agent.proto', { keepCase: true });
const Status = rpc.lookupType('google.rpc.Status');
const ErrorDetail = types.lookupType('smolmesh.v1.ErrorDetail');

// The ErrorDetail of a failed call, or null when it carries none.
function errorDetail(err) {
  const [bin] = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (!bin) return null;
  const packed = Status.decode(bin).details.find((any) => any.type_url.endsWith('/smolmesh.v1.ErrorDetail'));
  return packed ? ErrorDetail.toObject(ErrorDetail.decode(packed.value), { defaults: true }) : null;
}

// Prints a failed call: its status code and its ErrorDetail.
const fail = (method, err) => {
  const detail = errorDetail(err);
  console.log(`ERROR ${method} ${grpc.status[err.code]} reason=${detail ? detail.reason : '?'} ` +
    `retryable=${detail ? detail.retryable : '?'}: ${detail ? detail.message : err.details}`);
};
const reason = (error) => (error ? `${error.reason} (retryable=${error.retryable})` : 'none');

async function main() {
  const { card } = await call('Describe', {});
  console.log(`AGENT ${card.name} (run records: ${card.capabilities.run_records}, sessions: ${card.capabilities.sessions})`);

  // 1. Start a run in the background, watch a few events, drop the stream.
  const { run: started } = await call('StartRun', { task, agent: card.name });
  const runId = started.run_id;
  console.log(`STARTED ${runId} ${started.state}`);
  let last = -1;
  let seen = 0;
  await watch(runId, 0, (event) => {
    console.log(`EVENT ${event.index} ${event.kind} [${event.agent}]`);
    last = event.index;
    seen += 1;
    return seen < KEEP; // false: drop the stream
  });
  console.log(`DROPPED after event ${last}`);

  // 2. Find it again, rejoin it where the stream stopped, cancel it.
  const { run } = await call('GetRun', { run_id: runId });
  console.log(`GOT ${runId} ${run.state}, ${run.event_count} events so far`);
  const { runs, next_page_token: more } = await call('ListRuns', { page_size: 10 });
  const position = runs.findIndex((r) => r.run_id === runId);
  console.log(`LISTED ${runId} at position ${position} of ${runs.length}, newest first${more ? ' (more pages)' : ''}`);
  let cancelled = null;
  let finished = null;
  await watch(runId, last + 1, (event) => {
    if (cancelled === null) {
      console.log(`REJOINED at event ${event.index}`);
      cancelled = call('Cancel', { run_id: runId });
      cancelled.catch(() => {}); // handled below, once the stream has ended
    }
    if (event.kind === 'run_finished' && event.depth === 0) finished = event;
  });
  const first = await (cancelled || call('Cancel', { run_id: runId }));
  console.log(`CANCEL cancelled=${first.cancelled} state=${first.state}`);
  console.log(`WATCHED to event ${finished.index}: run_finished, error ${reason(finished.run_finished.error)}`);
  const { run: ended } = await call('GetRun', { run_id: runId });
  console.log(`ENDED ${runId} ${ended.state}, error ${reason(ended.error)}`);
  const again = await call('Cancel', { run_id: runId });
  console.log(`CANCEL cancelled=${again.cancelled} state=${again.state}`);

  // 3. A conversation: the second turn sees the first.
  const sessionId = `node-${crypto.randomUUID()}`;
  let ok = true;
  for (const [n, turn] of [firstTurn, secondTurn].entries()) {
    try {
      const reply = await call('Run', { task: turn, agent: card.name, session_id: sessionId });
      console.log(`TURN ${n + 1} ${reply.state} ANSWER ${reply.answer_text}`);
    } catch (err) {
      fail('Run', err);
      ok = false;
    }
  }
  try {
    const { session, turns } = await call('GetSession', { session_id: sessionId });
    console.log(`SESSION ${session.session_id}: ${session.turn_count} turn(s)`);
    for (const t of turns) console.log(`SESSION TURN ${t.task} -> ${t.answer_text}`);
    const { runs: conversation } = await call('ListRuns', { session_id: sessionId });
    console.log(`SESSION RUNS ${conversation.map((r) => r.run_id).join(' ')} (newest first)`);
  } catch (err) {
    fail('GetSession', err); // no turn was kept
    ok = false;
  }

  // 4. A call that fails: the ErrorDetail says why, and whether to retry.
  try {
    await call('GetRun', { run_id: 'no-such-run' });
  } catch (err) {
    fail('GetRun', err);
  }
  return ok;
}

main().then((ok) => {
  client.close();
  process.exitCode = ok ? 0 : 1;
}, (err) => {
  if (err.code !== undefined) fail('call', err);
  else console.error(err);
  client.close();
  process.exitCode = 1;
});
