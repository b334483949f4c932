// Watching the configuration file and the files it names. Stat polling (fs.watchFile) rather than
// inotify: it survives editors that replace files and Kubernetes ConfigMaps that swap symlinks.
import { unwatchFile, watchFile } from "node:fs";

export class FileWatcher {
  private watched: string[] = [];
  private debounce: NodeJS.Timeout | undefined;

  constructor(
    private readonly onChange: () => void,
    private readonly intervalMs = 500,
    private readonly settleMs = 200,
  ) {}

  /** Watches exactly these files from now on. */
  watch(files: readonly string[]): void {
    const next = new Set(files);
    for (const f of this.watched) if (!next.has(f)) unwatchFile(f);
    for (const f of next) {
      if (!this.watched.includes(f)) {
        watchFile(f, { interval: this.intervalMs, persistent: false }, (cur, prev) => {
          if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) this.changed();
        });
      }
    }
    this.watched = [...next];
  }

  close(): void {
    clearTimeout(this.debounce);
    for (const f of this.watched) unwatchFile(f);
    this.watched = [];
  }

  private changed(): void {
    // A change often touches several files (cert and key): act once they have settled.
    clearTimeout(this.debounce);
    this.debounce = setTimeout(this.onChange, this.settleMs);
  }
}
