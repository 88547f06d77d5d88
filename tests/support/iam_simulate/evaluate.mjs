// Test-only bridge to @cloud-copilot/iam-simulate: reads a JSON list of requests on stdin, prints one JSON answer
// per request ({"decision": "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied"} or {"errors": ...}) as a list.
// The policy evaluation is the library's; this file only maps tests/support/iam_simulator.py's requests onto it.
import { runSimulation } from '@cloud-copilot/iam-simulate'

async function evaluate(request) {
  const simulation = {
    identityPolicies: request.identityPolicies.map((policy, index) => ({ name: `identity-${index}`, policy })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: request.resourcePolicy ?? undefined,
    request: {
      principal: request.principal,
      action: request.action,
      resource: { resource: request.resource, accountId: request.resourceAccount },
      contextVariables: request.context
    }
  }
  const answer = await runSimulation(simulation, {})
  if (answer.errors) {
    return { errors: answer.errors }
  }
  return { decision: answer.result.analysis.result }
}

const chunks = []
for await (const chunk of process.stdin) {
  chunks.push(chunk)
}
const requests = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const answers = []
for (const request of requests) {
  answers.push(await evaluate(request))
}
process.stdout.write(JSON.stringify(answers))
