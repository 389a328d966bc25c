/**
 * Regenerates the configuration documentation from the OPTIONS table: the README table rows and
 * config/hubcache.example.json. `npm run docs:config`; test/unit/config.test.ts fails when they drift.
 */
import fs from 'node:fs';
import { OPTIONS, envName, flagName } from '../src/config/config.js';

const rows = OPTIONS.map((o) => `| \`${o.key}\` | \`${flagName(o.key)}\` | \`${envName(o.key)}\` | \`${JSON.stringify(o.default)}\` | ${o.description} |`).join('\n');
const readme = fs.readFileSync('README.md', 'utf8');
const table = /(\| option \| flag \| environment \| default \| meaning \|\n\|---\|---\|---\|---\|---\|\n)([\s\S]*?)(\n\n)/;
if (!table.test(readme)) throw new Error('README.md: configuration table not found');
fs.writeFileSync('README.md', readme.replace(table, (_m, head: string, _rows: string, tail: string) => head + rows + tail));

const example: Record<string, unknown> = {
  $comment: 'hubcache configuration. Every option with its default; see the Configuration section of README.md for what each does. Precedence: CLI flags > HUBCACHE_* environment > this file > defaults.',
};
for (const o of OPTIONS) example[o.key] = o.default;
fs.writeFileSync('config/hubcache.example.json', `${JSON.stringify(example, null, 2)}\n`);
