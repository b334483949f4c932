// `parley tail`: decision logs as a readable, filterable view.
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { formatLine, matches, parseLine, parseSince, Summary } from "../telemetry/tail.js";
import { type Command, HELP, helped, parse, readableFlag, UsageError } from "./command.js";

export const tail: Command = {
  name: "tail",
  usage: `usage: parley tail [FILE] [--deny] [--id S] [--reason R] [--listener L] [--since 10m|TIME]
                   [--summary] [--color | --no-color]

Reads decision logs (default: standard input) and prints one readable row a record.
  --deny          denials only                  --id S          peer IDs containing S
  --reason R      records with reason R         --listener L    one listener
  --since T       a duration (10m) or ISO time  --summary       top denied identities and reasons`,
  async run(args) {
    const { values, positionals } = parse(this, {
      args,
      allowPositionals: true,
      options: {
        deny: { type: "boolean", default: false },
        id: { type: "string" },
        reason: { type: "string" },
        listener: { type: "string" },
        since: { type: "string" },
        summary: { type: "boolean", default: false },
        color: { type: "boolean" },
        "no-color": { type: "boolean" },
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    if (positionals.length > 1) throw new UsageError("at most one FILE (default: standard input)", this.name);
    const since = values.since === undefined ? undefined : parseSince(values.since, Date.now());
    if (values.since !== undefined && since === undefined)
      throw new UsageError(`--since: expected a duration (10m) or an ISO time, got ${values.since}`, this.name);
    const color = values["no-color"] ? false : (values.color ?? (process.stdout.isTTY && !process.env["NO_COLOR"]));
    const filter = {
      deny: values.deny,
      ...(values.id !== undefined ? { id: values.id } : {}),
      ...(values.reason !== undefined ? { reason: values.reason } : {}),
      ...(values.listener !== undefined ? { listener: values.listener } : {}),
      ...(since !== undefined ? { since } : {}),
    };
    const filtering = values.deny || Object.keys(filter).length > 1;
    const path = positionals[0] === undefined || positionals[0] === "-" ? undefined : positionals[0];
    const input = path === undefined ? process.stdin : createReadStream(readableFlag(this, "FILE", path));
    const lines = createInterface({ input, crlfDelay: Infinity });
    // A reader that goes away (`parley tail | head`) ends the view quietly, as SIGPIPE ends a C tool.
    const reader = { gone: false };
    process.stdout.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "EPIPE") throw e;
      reader.gone = true;
      lines.close();
      input.destroy();
    });
    const summary = new Summary(filtering);
    for await (const line of lines) {
      if (reader.gone) break;
      const rec = parseLine(line);
      if (!rec) {
        // Lines that are not records pass through unfiltered views only.
        if (!values.summary && line.trim() && !filtering) process.stdout.write(line + "\n");
        continue;
      }
      const matched = matches(rec, filter);
      if (values.summary) summary.add(rec, matched);
      else if (matched) process.stdout.write(formatLine(rec, color) + "\n");
    }
    if (values.summary && !reader.gone) process.stdout.write(summary.render(color));
    return 0;
  },
};
