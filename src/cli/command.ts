// What every command shares: its usage text, flags parsed with node:util, `--help` for each command,
// and the usage error (exit 2) that names one problem and points to `parley COMMAND --help`.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { parseHostPort, type HostPort } from "../config/units.js";
import { ParleyError } from "../errors/catalogue.js";

export interface Command {
  readonly name: string;
  /** The command's synopsis and its options, as `parley COMMAND --help` prints them. */
  readonly usage: string;
  /** Resolves to the exit code, or -1 for a command that keeps running (a server). */
  run(args: string[]): Promise<number> | number;
}

/** Bad input on the command line: one line naming the problem, exit 2. */
export class UsageError extends ParleyError {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super("PARLEY_ERR_USAGE", message);
  }
}

/** The `--help` flag every command takes. */
export const HELP = { help: { type: "boolean", short: "h" } } as const;

/** parseArgs for `command`, its errors (unknown option, missing value) turned into UsageErrors. */
export function parse<T extends ParseArgsConfig>(command: Command, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError((e as Error).message, command.name);
  }
}

/** Prints the command's usage (for `--help`) and returns exit code 0. */
export function helped(command: Command): number {
  process.stdout.write(command.usage + "\n");
  return 0;
}

/** A `host:port` flag, or a UsageError naming it. */
export function hostPortFlag(command: Command, value: string | undefined, flag: string): HostPort | undefined {
  if (value === undefined) return undefined;
  const hp = parseHostPort(value);
  if (!hp) throw new UsageError(`${flag}: expected host:port, got ${value}`, command.name);
  return hp;
}
