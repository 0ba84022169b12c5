import os, sys, subprocess, tempfile, time
from pathlib import Path
sys.path.insert(0, 'scripts')
import scaling as S
D = Path('.dbg').resolve()
S.BINS.update(tollgate=str(D / 'bin/tollgate'), wrk=str(D / 'bin/wrk'), nginx=str(D / 'bin/nginx'))
S.LIB_ENV['LD_LIBRARY_PATH'] = str(D / 'lib')
OUT = Path(os.environ.get('OUT', '/tmp/profout'))
OUT.mkdir(exist_ok=True)
PERF = [str(D / 'bin/perf')]
env = dict(os.environ, LD_LIBRARY_PATH=str(D / 'lib'))
n_cpu = len(os.sched_getaffinity(0))
gw, wrk_cpus, be_cpus = S.layout(n_cpu)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 4
gw = gw[:N]
tmp = Path(tempfile.mkdtemp()); os.chmod(tmp, 0o755)
S.tune()
bport = S.free_port()
be = S.Proc("backend", [S.BINS['nginx'], "-e", "stderr", "-p", str(tmp), "-c", str(S.backend_conf(tmp, bport, be_cpus))], be_cpus, tmp)
S.wait_port(bport)
def rep(data, name, args):
    with open(OUT / name, 'w') as f:
        subprocess.run(PERF + ['report', '-i', data, '--stdio'] + args, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=120)
try:
    for system in ('tollgate', 'tollgate-epoll'):
        p, port = S.start(system, N, gw, tmp, bport)
        try:
            conns = 64 * N
            S.wrk(tmp, port, 'new_conn', 1, conns, wrk_cpus)
            lua = tmp / 'report.lua'
            w = subprocess.Popen([S.BINS['wrk'], f'-t{len(wrk_cpus)}', f'-c{conns}', '-d5s', '-s', str(lua), '-H', 'Connection: close',
                                  f'http://127.0.0.1:{port}/small'], stdout=subprocess.PIPE, text=True, env=env,
                                 preexec_fn=lambda: os.sched_setaffinity(0, set(wrk_cpus)))
            time.sleep(1)
            b = S.tree_cpu_ns(p.p.pid); t0 = time.time()
            data = f'/tmp/{system}.data'
            subprocess.run(PERF + ['record', '-q', '-e', 'cpu-clock', '-F', '1999', '-g', '-C', S.cpus_str(gw), '-o', data, '--', 'sleep', '2.5'],
                           env=env, timeout=60)
            c = S.tree_cpu_ns(p.p.pid) - b; el = time.time() - t0
            sw = f'/tmp/{system}-sw.data'
            r = subprocess.run(PERF + ['record', '-q', '-e', 'sched:sched_switch', '-g', '-C', S.cpus_str(gw), '-o', sw, '--', 'sleep', '1'],
                               env=env, timeout=60)
            out = w.communicate(timeout=30)[0]
            print(system, f'busy {c / 1e9 / el / N:.2f}', [l for l in out.splitlines() if l.startswith('JSON')], flush=True)
        finally:
            p.stop()
        rep(data, f'{system}-sym.txt', ['--no-children', '--sort', 'sym', '-g', 'none', '--percent-limit', '0.4'])
        rep(data, f'{system}-cg.txt', ['--no-children', '--sort', 'sym', '-g', 'caller,0.5,callee,function,percent', '--percent-limit', '2.5'])
        if r.returncode == 0:
            rep(sw, f'{system}-switch.txt', ['--no-children', '--sort', 'comm,sym', '-g', 'caller,2,callee,function,percent', '--percent-limit', '2'])
finally:
    be.stop()
for f in sorted(OUT.iterdir()):
    print(f.name, f.stat().st_size)
