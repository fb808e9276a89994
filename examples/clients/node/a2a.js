// An A2A v1.0 client in Node.js: the official SDK (@a2a-js/sdk) over the gRPC
// binding, against any agent that serves A2A (a mesh agent with A2A on, say).
// It fetches the agent card from CARD_URL, makes a client for the card's GRPC
// interface (the SDK sends `a2a-version: 1.0` with every call) and
//
//   a. prints the card;
//   b. sends a message and blocks until the task ends (its answer artifact);
//   c. streams a message in the same context, event by event;
//   d. gets the task, and lists the context's tasks a page of one at a time;
//   e. holds a multi-turn task: the agent asks a question (INPUT_REQUIRED), the
//      next message to the same task answers it and the task completes;
//   f. starts a long task without waiting (returnImmediately) and cancels it;
//   g. streams a long task, drops the stream after its first event, subscribes to
//      the task again and reads it to the end;
//   h. asks for a task that does not exist, and decodes the google.rpc.ErrorInfo
//      of the rich status (the trailer grpc-status-details-bin).
//
//   node a2a.js [CARD_URL]
//
// CARD_URL (where /.well-known/agent-card.json is) defaults to
// http://127.0.0.1:9999. The agent is expected to act on message id prefixes as
// the A2A TCK's scenarios do (services/a2a_conformance does). Each line it prints
// starts with a word in capitals, for scripts to read; it exits 1 if anything but
// step h failed, or if step h did not.
'use strict';

const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const {
  CancelTaskRequest, GetTaskRequest, ListTasksRequest, SendMessageRequest, SubscribeToTaskRequest, TaskState,
} = require('@a2a-js/sdk'); // the A2A types, made from their proto JSON form with fromJSON
const { ClientFactory, DefaultAgentCardResolver } = require('@a2a-js/sdk/client');
const { GrpcTransportFactory } = require('@a2a-js/sdk/client/grpc');
const { decodeStatus, decodeErrorInfo } = require('@a2a-js/sdk/errors/grpc');

const [cardUrl = 'http://127.0.0.1:9999'] = process.argv.slice(2);
// Each call is abandoned (the gRPC call cancelled) after a minute.
const options = () => ({ signal: AbortSignal.timeout(60_000) });

// A message from the user; its id, unique, starts with `prefix`: the agent's cue.
const request = (prefix, text = 'hello', message = {}, configuration = {}) => SendMessageRequest.fromJSON({
  message: {
    messageId: `${prefix}-${crypto.randomUUID().slice(0, 8)}`, role: 'ROLE_USER', parts: [{ text }], ...message,
  },
  configuration,
});

const stateOf = (status) => TaskState[status ? status.state : 0];
const textOf = (parts) => parts.filter((p) => p.content && p.content.$case === 'text')
  .map((p) => p.content.value).join('');
const answerOf = (task) => textOf(task.artifacts.flatMap((a) => a.parts));

// One stream event: its kind, the task it is about and, for a task or a status
// update, the task's state.
function describe({ payload }) {
  const { $case: kind, value } = payload;
  if (kind === 'task') return { kind, taskId: value.id, state: stateOf(value.status) };
  if (kind === 'statusUpdate') return { kind, taskId: value.taskId, state: stateOf(value.status) };
  if (kind === 'artifactUpdate') return { kind, taskId: value.taskId, artifact: value.artifact };
  return { kind, taskId: value.taskId }; // a message
}
const show = ({ kind, state, artifact }) => [kind, state, artifact && `${artifact.name}: ${textOf(artifact.parts)}`]
  .filter(Boolean).join(' ');

// Reads a stream to its end: prints each event, returns the last and how many.
async function readToEnd(stream, label) {
  let last = null;
  let count = 0;
  for await (const event of stream) {
    last = describe(event);
    count += 1;
    console.log(`${label} ${show(last)}`);
  }
  return { last, count };
}

// The ErrorInfo of the rich status the error came with, or null.
function errorInfo(err) {
  if (!err.statusDetailsBin) return null;
  const info = decodeStatus(err.statusDetailsBin).details
    .find((any) => any.typeUrl === 'type.googleapis.com/google.rpc.ErrorInfo');
  return info ? decodeErrorInfo(info.value) : null;
}

// Prints a failed call: its gRPC status code and the reason and domain of its ErrorInfo.
function fail(method, err) {
  const info = errorInfo(err);
  const code = err.status !== undefined ? grpc.status[err.status] : '?';
  console.log(`ERROR ${method} ${code} reason=${info ? info.reason : '?'} ` +
    `domain=${info ? info.domain : '?'} (${err.name}): ${err.message}`);
}

async function main() {
  // a. The card, and a client for its GRPC interface (the only transport offered).
  const card = await new DefaultAgentCardResolver().resolve(cardUrl);
  const client = await new ClientFactory({ transports: [new GrpcTransportFactory()] })
    .createFromAgentCard(card);
  const grpcInterface = card.supportedInterfaces.find((i) => i.protocolBinding === 'GRPC');
  console.log(`CARD name=${card.name} binding=${client.transport.protocolName} ` +
    `url=${grpcInterface.url} version=${client.protocolVersion} streaming=${card.capabilities.streaming}`);

  // b. A blocking send: the reply is the task, ended.
  const sent = await client.sendMessage(request('tck-complete-task'), options());
  console.log(`SEND ${sent.id} ${stateOf(sent.status)} ANSWER ${answerOf(sent)}`);
  const contextId = sent.contextId;

  // c. A streamed send, in the same context: the task, then its updates.
  const again = request('tck-complete-task', 'hello again', { contextId });
  const streamed = await readToEnd(client.sendMessageStream(again, options()), 'EVENT');
  console.log(`STREAM ${streamed.last.taskId} ${streamed.count} events, final ${streamed.last.state}`);

  // d. Get the first task; list the context's tasks, one per page, newest first.
  const got = await client.getTask(GetTaskRequest.fromJSON({ id: sent.id, historyLength: 10 }), options());
  console.log(`GOT ${got.id} ${stateOf(got.status)} ANSWER ${answerOf(got)} HISTORY ${got.history.length}`);
  const listed = [];
  let pages = 0;
  let pageToken = '';
  do {
    const page = await client.listTasks(ListTasksRequest.fromJSON({ contextId, pageSize: 1, pageToken }), options());
    listed.push(...page.tasks.map((t) => t.id));
    pages += 1;
    pageToken = page.nextPageToken;
  } while (pageToken && pages < 10);
  console.log(`LISTED ${listed.length} tasks in ${pages} pages: ${listed.join(' ')}`);

  // e. Multi-turn: the agent asks, the next message to the same task answers.
  const asked = await client.sendMessage(request('tck-input-required'), options());
  console.log(`ASKED ${asked.id} ${stateOf(asked.status)} QUESTION ${textOf(asked.status.message.parts)}`);
  const answered = await client.sendMessage(
    request('tck-complete-task', 'do what you like', { taskId: asked.id }), options());
  console.log(`ANSWERED ${answered.id} ${stateOf(answered.status)} ANSWER ${answerOf(answered)}`);

  // f. Start a long task without waiting for it, then cancel it.
  const started = await client.sendMessage(
    request('test-resubscribe-message-id', 'take your time', {}, { returnImmediately: true }), options());
  console.log(`STARTED ${started.id} ${stateOf(started.status)}`);
  const began = Date.now();
  const cancelled = await client.cancelTask(CancelTaskRequest.fromJSON({ id: started.id }), options());
  const took = ((Date.now() - began) / 1000).toFixed(1);
  console.log(`CANCELED ${cancelled.id} ${stateOf(cancelled.status)} in ${took} s`);

  // g. Stream a long task, drop the stream after one event, subscribe again.
  let dropped = null;
  for await (const event of client.sendMessageStream(request('test-resubscribe-message-id'), options())) {
    dropped = describe(event);
    break; // ends the gRPC call, as a client that goes away would
  }
  console.log(`DROPPED ${dropped.taskId} after the first event (${show(dropped)})`);
  const subscribe = SubscribeToTaskRequest.fromJSON({ id: dropped.taskId });
  const rejoined = await readToEnd(client.resubscribeTask(subscribe, options()), 'REJOINED');
  console.log(`SUBSCRIBED ${rejoined.last.taskId} ${rejoined.count} events, final ${rejoined.last.state}`);

  // h. A call that fails: the status code and ErrorInfo say why.
  try {
    const task = await client.getTask(GetTaskRequest.fromJSON({ id: 'no-such-task' }), options());
    console.log(`UNEXPECTED getTask found ${task.id}`);
    return false;
  } catch (err) {
    fail('getTask', err);
    return err.status !== undefined;
  }
}

main().then((ok) => {
  process.exitCode = ok ? 0 : 1;
}, (err) => {
  if (err.status !== undefined) fail('call', err);
  else console.error(err);
  process.exitCode = 1;
});
