// A smolmesh client in Node.js: loads protos/ at run time (no codegen), asks
// the agent for its card, runs a task as a stream and prints every step
// event, indented by delegation depth.
//
//   node client.js [ADDRESS] [TASK]      (default 127.0.0.1:50051, the seed task)
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const SEED_TASK = 'In which year was gRPC open-sourced? Remember the year in the memo, ' +
  'then tell me the smallest prime factor of that year.';
const address = process.argv[2] || '127.0.0.1:50051';
const task = process.argv[3] || SEED_TASK;

const definition = protoLoader.loadSync('smolmesh/v1/agent.proto', {
  includeDirs: [path.join(__dirname, '..', '..', '..', 'protos')],
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const mesh = grpc.loadPackageDefinition(definition).smolmesh.v1;
const client = new mesh.AgentService(address, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 120_000);

// An ErrorDetail (unset: null) as one line.
const why = (error) => `${error.reason}: ${error.message}`;

function describe(event) {
  const e = event[event.kind];
  switch (event.kind) {
    case 'run_started': return `task: ${e.task}`;
    case 'model_output': return `step ${event.step}: model (${e.usage.input_tokens} in / ${e.usage.output_tokens} out tokens)`;
    case 'code_action': return `code: ${e.code.split('\n')[0]}${e.code.includes('\n') ? ' ...' : ''}`;
    case 'tool_call_started': return `-> ${e.name}(${e.arguments_json})`;
    case 'tool_call_finished': return `<- ${e.name}: ${e.error ? 'error: ' + why(e.error) : e.result}`;
    case 'observation': return `observation: ${e.text.replace(/\n/g, ' ')}`;
    case 'step_failed': return `error: ${why(e.error)}`;
    case 'final_answer': return `final answer: ${e.answer_text}`;
    case 'run_finished': return `finished: ${e.steps} steps, ${e.usage.input_tokens} + ${e.usage.output_tokens} tokens${e.error ? ', error: ' + why(e.error) : ''}`;
    default: return event.kind;
  }
}

client.Describe({}, { deadline: deadline() }, (err, reply) => {
  if (err) {
    console.error(`Describe failed: ${grpc.status[err.code]}: ${err.details}`);
    process.exit(2);
  }
  const card = reply.card;
  console.log(`agent ${card.name} (${card.kind}, model ${card.model_id}), delegates to: ${card.managed_agents.join(', ') || 'nobody'}`);
  let answer = null;
  const call = client.RunStream({ task, agent: card.name }, { deadline: deadline() });
  call.on('data', ({ events }) => {
    for (const event of events) {
      console.log(`${'    '.repeat(event.depth)}[${event.agent}] ${describe(event)}`);
      if (event.kind === 'final_answer' && event.depth === 0) answer = event.final_answer.answer_text;
    }
  });
  call.on('error', (error) => {
    console.error(`RunStream failed: ${grpc.status[error.code]}: ${error.details}`);
    process.exit(1);
  });
  call.on('end', () => {
    console.log(`ANSWER ${answer}`);
    client.close();
    process.exit(answer === null ? 1 : 0);
  });
});
