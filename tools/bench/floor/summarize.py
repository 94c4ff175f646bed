import re,sys,collections
for f in sys.argv[1:]:
    print("###",f)
    runs=collections.OrderedDict()
    for line in open(f):
        m=re.match(r'CRYPTO (\S+) (pre|post)\s+crypto\(thread-cpu\): sign_us=([\d.]+) verify_us=([\d.]+) unavoidable_us\(2S\+2V\)=([\d.]+)',line)
        if m: runs.setdefault(m[1],{}).setdefault('bench',[]).append((float(m[3]),float(m[4]),float(m[5])))
        m=re.match(r'RESULT (\S+) .*ops_per_s=([\d.]+) errors=(\d+) gw_cpu_us_per_op\(schedstat\)=([\d.]+).*gw_cores=([\d.]+)',line)
        if m: runs[m[1]].update(ops=float(m[2]),err=int(m[3]),cpu=float(m[4]),cores=float(m[5]))
        m=re.match(r'THREADS (\S+) us/op: (.*)',line)
        if m:
            d=dict((k.split('[')[0],float(v)) for k,v in (x.split('=') for x in m[2].split()))
            runs[m[1]].update(wr=d.get('sqlite-writer',0.0),tw=d.get('tokio-rt-worker',0.0))
        m=re.match(r'INSITU (\S+) sign_us=([\d.]+) verify_us=([\d.]+) 2S\+2V=([\d.]+) crypto_us_per_op=([\d.]+) non_crypto_us_per_op=([\d.]+) RATIO_insitu=([\d.]+)',line)
        if m: runs[m[1]].update(isign=float(m[2]),iver=float(m[3]),iu=float(m[4]),noncrypto=float(m[6]),ri=float(m[7]))
        m=re.match(r'DB (\S+) commits=(\d+) jobs=(\d+) jobs_per_commit=([\d.]+)',line)
        if m: runs[m[1]].update(jpc=float(m[4]))
    print("| run | ops/s | err | gw cores | gw CPU µs/op | tokio workers µs/op | sqlite-writer µs/op | bench sign/verify µs | bench 2S+2V | ratio (bench) | in-situ sign/verify µs | in-situ non-crypto µs/op | ratio (in-situ) | jobs/commit |")
    print("|"+"---|"*15)
    agg=collections.defaultdict(list)
    for k,r in runs.items():
        b=r['bench']; s=sum(x[0] for x in b)/len(b); v=sum(x[1] for x in b)/len(b); u=2*s+2*v
        rb=r['cpu']/u
        print(f"| {k} | {r['ops']:.0f} | {r['err']} | {r['cores']:.2f} | {r['cpu']:.0f} | {r['tw']:.0f} | {r['wr']:.0f} | {s:.0f}/{v:.1f} | {u:.0f} | {rb:.3f} | {r['isign']:.0f}/{r['iver']:.1f} | {r['noncrypto']:.0f} | {r['ri']:.3f} | {r.get('jpc',0):.2f} |")
        agg[k.rsplit('-r',1)[0]].append((r['ops'],r['cpu'],rb,r['ri'],r['noncrypto'],r['wr'],u))
    print("\nmeans:")
    print("| variant | n | ops/s | gw CPU µs/op | bench 2S+2V µs | ratio (bench) min–max | ratio (in-situ) min–max | non-crypto µs/op | writer µs/op |")
    print("|"+"---|"*9)
    for k,l in agg.items():
        n=len(l); m=lambda i: sum(x[i] for x in l)/n
        print(f"| {k} | {n} | {m(0):.0f} | {m(1):.0f} | {m(6):.0f} | {m(2):.3f} ({min(x[2] for x in l):.2f}–{max(x[2] for x in l):.2f}) | {m(3):.3f} ({min(x[3] for x in l):.2f}–{max(x[3] for x in l):.2f}) | {m(4):.0f} | {m(5):.0f} |")
