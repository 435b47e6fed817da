// Heap figures on MicroPython's webassembly port: a 32-bit build (pointers, object headers and GC
// blocks of 16 bytes, as on an ESP32) of the same MicroPython release as the unix port. Used by
// bench/device.py beside the same measures on the unix port; two of them:
//
//     node bench/heap32.mjs PACKAGE_DIR CODE imports LIST_FILE
//         the heap each module named in LIST_FILE (comma-separated) adds once imported.
//         Prints {"port", "modules": {name: bytes}, "total", "qstr_bytes"}.
//     node bench/heap32.mjs PACKAGE_DIR CODE objects SCRIPT_FILE
//         runs the two parts of SCRIPT_FILE (split at a line "# ---"): the imports and what the
//         objects need, then the objects; prints {"port", "link"}: the heap the second part keeps.
//     node bench/heap32.mjs PACKAGE_DIR CODE scenario SCRIPT_FILE BOARD_FILE ROLE TAPS
//         runs SCRIPT_FILE, whose parts (split at lines "# ---") are: the board's HAL (counted
//         as the role's: the simulator imports it, a board runs it), the simulator's imports,
//         the firmware's, the simulated board, the app, the taps (top-level await), in the order
//         of bench/device.py's SCRIPT, where the same figures are read. Prints {"port", "sim",
//         "start", "after"}: the simulator's share, the heap in use once the app is built and
//         after the taps, with the simulator's share taken off both; then what the script printed.
//
// CODE is a ROMFS image, mounted at /rom outside the GC heap (bytecode used in place), or a
// folder of .mpy files, copied into the port's filesystem (an import copies them to the heap).
// This build (the PyScript variant) grows its heap instead of collecting in the middle of a call
// (gc_collect only marks a collection as due, done once control is back in JavaScript), so every
// figure is read in a call of its own, after a call that asked for the collection; and no least
// heap can be found here.
//
// The port has no sockets, no threads and no AES. device.link.mqtt and the simulator's PN532 model
// import them at their top but use them only for what the scenario never does (connect, answer
// an NTAG 424 card): empty modules let the imports run, and a call would fail loudly. The
// simulated watchdog starts a thread to watch for a hung loop: here it starts none, so the
// watchdog is fed but not watched (nothing hangs in the scenario).

import { readdirSync, readFileSync, statSync } from "node:fs";
import process from "node:process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

process.on("uncaughtException", (error) => {
  // node would print the line of minified code it came from; the message is what tells
  process.stderr.write(`${error.name}: ${error.message}\n`);
  process.exit(1);
});
process.on("unhandledRejection", (error) => {
  process.stderr.write(`${error.name}: ${error.message}\n`);
  process.exit(1);
});

const [packageDir, codePath, mode, ...rest] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(join(packageDir, "micropython.mjs")).href);
const printed = [];
const inFiles = statSync(codePath).isDirectory(); // .mpy files, else a ROMFS image
const mp = await loadMicroPython({
  heapsize: 4 << 20,
  romfs: inFiles ? undefined : new Uint8Array(readFileSync(codePath)),
  stdout: (line) => printed.push(line),
  stderr: (line) => process.stderr.write(`${line}\n`),
});
if (inFiles) {
  // into the port's in-memory filesystem, first on sys.path: an import reads them onto the heap
  const copy = (from, to) => {
    mp.FS.mkdir(to);
    for (const entry of readdirSync(from, { withFileTypes: true })) {
      const source = join(from, entry.name);
      if (entry.isDirectory()) {
        copy(source, `${to}/${entry.name}`);
      } else {
        mp.FS.writeFile(`${to}/${entry.name}`, readFileSync(source));
      }
    }
  };
  copy(codePath, "/code");
  mp.runPython("import sys\nsys.path.insert(0, '/code')");
}
mp.registerJsModule("socket", {});
mp.registerJsModule("cryptolib", {});
mp.registerJsModule("_thread", { start_new_thread: () => null });
mp.runPython("import asyncio, gc, micropython"); // before any figure: this port's asyncio is its own

function collected() {
  mp.runPython("gc.collect()"); // due, done as the call returns
  mp.runPython("print(gc.mem_alloc())");
  return parseInt(printed.pop(), 10);
}

function qstrBytes() {
  mp.runPython("micropython.qstr_info()");
  const pool = printed.filter((line) => line.startsWith("qstr pool:")).pop();
  printed.length = 0;
  return parseInt(pool.split("n_total_bytes=")[1], 10);
}

mp.runPython("import sys\nprint(sys.implementation._machine, sys.version.split(';')[1].strip())");
const port = printed.pop();

if (mode === "imports") {
  const modules = {};
  const qstrStart = qstrBytes();
  const start = collected();
  for (const name of readFileSync(rest[0], "utf8").trim().split(",")) {
    const before = collected();
    mp.runPython(`import ${name}`);
    modules[name] = collected() - before;
  }
  const total = collected() - start;
  console.log(JSON.stringify({ port, modules, total, qstr_bytes: qstrBytes() - qstrStart }));
} else if (mode === "scenario") {
  const [scriptFile, boardFile, role, taps] = rest;
  const parts = readFileSync(scriptFile, "utf8").split("# ---\n");
  const [halImport, simImports, firmwareImports, board, build, run] = parts;
  mp.FS.writeFile("/tmp/board.json", readFileSync(boardFile));
  mp.runPython(`ROLE = ${JSON.stringify(role)}\nTAPS = ${parseInt(taps, 10)}`);
  const bare = collected();
  mp.runPython(halImport); // the board's HAL: the simulator imports it, a board runs it
  const beforeSim = collected();
  mp.runPython(simImports);
  const simCode = collected() - beforeSim;
  mp.runPython(firmwareImports);
  const beforeBoard = collected();
  mp.runPython(board);
  const sim = simCode + collected() - beforeBoard; // and the simulated board's own objects
  mp.runPython(build);
  const start = collected();
  await mp.runPythonAsync(run);
  const after = collected();
  const report = { port, sim, start: start - bare - sim, after: after - bare - sim };
  const text = [JSON.stringify(report), ...printed, ""].join("\n");
  // exit once written: the app's tasks would keep the event loop alive for ever
  process.stdout.write(text, () => process.exit(0));
} else if (mode === "objects") {
  // the script's parts: imports and the journal (not counted), then the link's objects
  const [setup, build] = readFileSync(rest[0], "utf8").split("# ---\n");
  mp.runPython(setup);
  const before = collected();
  mp.runPython(build);
  console.log(JSON.stringify({ port, link: collected() - before }));
} else {
  throw new Error(`mode ${mode}: imports, scenario or objects`);
}
