import { type Command, Option } from '@commander-js/extra-typings';
import { runCleanup } from '../agent/cleanup.js';
import { makeLogger } from '../log.js';
import { duration, pinDirOption, stateDirOption } from './options.js';

export function addCleanupCommand(program: Command): void {
  program
    .command('cleanup')
    .description(
      'detach our programs (cls_bpf filters in this network namespace, tcx links pinned under the pin dir), delete the clsact qdiscs we created, unpin the maps; refuses while an agent runs on the pin dir',
    )
    .addOption(pinDirOption())
    .addOption(stateDirOption())
    .option('--force', 'stop a running agent first (SIGTERM, then wait for it to exit)')
    .addOption(
      new Option('--force-timeout <duration>', 'with --force: how long to wait for the agent to exit')
        .argParser(duration('--force-timeout'))
        .default(15_000, '15s'),
    )
    .action(async (o) => {
      const log = makeLogger('info');
      const r = await runCleanup({ pinDir: o.pinDir, stateDir: o.stateDir, force: !!o.force, forceTimeoutMs: o.forceTimeout }, log);
      if (!r.ok) {
        process.stderr.write(`bpfproxy cleanup: ${r.message}\n`);
        process.exit(1);
      }
      console.log(r.message);
    });
}
