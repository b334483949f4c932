// What every command shares: its usage text, flags parsed with node:util, `--help` for each command,
// and the usage error (exit 2) that names one problem and points to `parley COMMAND --help`.
import { accessSync, constants, readFileSync, statSync } from "node:fs";
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
export function hostPortFlag(command: Command, value: string, flag: string): HostPort;
export function hostPortFlag(command: Command, value: string | undefined, flag: string): HostPort | undefined;
export function hostPortFlag(command: Command, value: string | undefined, flag: string): HostPort | undefined {
  if (value === undefined) return undefined;
  const hp = parseHostPort(value);
  if (!hp) throw new UsageError(`${flag}: expected host:port, got ${value}`, command.name);
  return hp;
}

/** Why a path cannot be used, in words (the errno codes operators meet on the command line). */
function unreadable(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file or directory";
  if (code === "EISDIR") return "is a directory, not a file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  return (e as Error).message;
}

/** The text of the file a flag names, or a UsageError naming the flag and why (bad input: exit 2). */
export function readFlagFile(command: Command, flag: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`${flag} ${path}: ${unreadable(e)}`, command.name);
  }
}

/** A file a flag names that will be streamed: checked readable now, or a UsageError naming the flag. */
export function readableFlag(command: Command, flag: string, path: string): string {
  try {
    if (statSync(path).isDirectory()) throw Object.assign(new Error("directory"), { code: "EISDIR" });
    accessSync(path, constants.R_OK);
  } catch (e) {
    throw new UsageError(`${flag} ${path}: ${unreadable(e)}`, command.name);
  }
  return path;
}

/** A flag that must name an existing directory, or a UsageError naming the flag. */
export function directoryFlag(command: Command, flag: string, path: string): string {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${flag} ${path}: ${code === "ENOENT" ? "no such directory" : unreadable(e)}`, command.name);
  }
  if (!isDir) throw new UsageError(`${flag} ${path}: not a directory`, command.name);
  return path;
}

/** A YAML document with a top-level `control_plane` key is a bootstrap file (run --bootstrap), else a configuration. */
export function isBootstrapDoc(doc: unknown): boolean {
  return typeof doc === "object" && doc !== null && !Array.isArray(doc) && "control_plane" in doc;
}
