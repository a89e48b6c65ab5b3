#!/usr/bin/env node
/** bpfproxy-lab: a local namespace "cluster" to try bpfproxy on. */
import { Command } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { REPO_ROOT, labDown, labSpec, labUp } from './lab.js';
import { runDemo } from './demo.js';

const lab = new Command('bpfproxy-lab').description('a local namespace "cluster" to try bpfproxy on').showHelpAfterError();
lab
  .command('up')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .description('build the lab namespaces and start echo servers in the pods')
  .action((o) => {
    labDown(o.prefix);
    labUp(labSpec(o.prefix));
    console.log(
      `lab ${o.prefix} is up: nodes ${labSpec(o.prefix)
        .nodes.map((n) => n.ns)
        .join(', ')}, client ${labSpec(o.prefix).client.ns}`,
    );
  });
lab
  .command('down')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .description('remove the lab namespaces and pins')
  .action((o) => {
    const gone = labDown(o.prefix);
    console.log(`removed ${gone.length} namespace(s)`);
  });
lab
  .command('demo')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .option('--manifests <dir>', 'manifests to serve', join(REPO_ROOT, 'manifests', 'examples'))
  .description('lab up, agents on both nodes, traffic to each service type, lab down')
  .action(async (o) => {
    const ok = await runDemo(o.prefix, o.manifests);
    process.exit(ok ? 0 : 1);
  });

lab.parseAsync().catch((e: Error) => {
  process.stderr.write(`bpfproxy-lab: ${e.message}\n`);
  process.exit(1);
});
