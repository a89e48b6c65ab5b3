/** `bpfproxy agent --help` prints defaults the way a user writes them on the command line. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { CLI } from './helpers/agent-proc.js';

t.test('agent --help: defaults as written', async (t) => {
  const r = spawnSync(process.execPath, [CLI, 'agent', '--help'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 0, r.stderr);
  const help = r.stdout.replace(/\s+/g, ' ');
  t.match(help, '--pod-ifaces <regex> pod-facing host interfaces (default: "^(cali|veth|lxc|azv|eni).*")', 'the regex source, not {}');
  t.notMatch(help, /default: \{\}/);
  t.match(help, /--min-sync-period <duration> .*\(default: 1s\)/, 'a duration, not milliseconds');
  t.match(help, /--sync-period <duration> full resync interval \(default: 30s\)/);
  t.notMatch(help, /\(default: (1000|30000)\)/);
  t.match(help, /--tc-attach <mode> .*\(choices: "auto", "tcx", "cls", default: "auto"\)/);
  t.match(help, /--external-ip-cidrs <list> .*\(default: any address but the node's own\) --allow/, 'one default, not two');
});
