#!/usr/bin/env node
/** bpfproxy: the agent and the operator commands. */
import { Command } from '@commander-js/extra-typings';
import { addAgentCommand } from './agent.js';
import { addCleanupCommand } from './cleanup.js';
import { addEngineCommand } from './engine.js';
import { addConntrackCommand, addServicesCommand, addStatusCommand } from './inspect.js';
import { addMonitorCommand } from './monitor.js';
import { addPolicyCommand } from './policy.js';
import { addTraceCommand } from './trace.js';

const program = new Command('bpfproxy')
  .description('eBPF kube-proxy replacement: Kubernetes services in TC programs, driven from TypeScript')
  .showHelpAfterError();

addAgentCommand(program);
addServicesCommand(program);
addConntrackCommand(program);
addStatusCommand(program);
addPolicyCommand(program);
addMonitorCommand(program);
addTraceCommand(program);
addCleanupCommand(program);
addEngineCommand(program);

program.parseAsync().catch((e: Error) => {
  process.stderr.write(`bpfproxy: ${e.message}\n`);
  process.exit(1);
});
