#!/usr/bin/env bash
# Compare several run.sh result folders: per scenario and proxy, the ratios to haproxy of
# every run (every round of a ROUNDS run), then min / max over the runs, to judge how
# stable the ratios are. The mtls-h1 / mtls-h2 ratios are to haproxy-tls-pair, the
# handshake ratios to rustls-alone ("ha" in the header). Rows where
# other processes used more than NOISE_MAX (10) % CPU, in that run or haproxy's, are shown
# but left out of the range.
#
# Usage: tests/perf/summarize.sh tests/perf/results/<a> tests/perf/results/<b> ...
#        (no argument: every folder under tests/perf/results/)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if (($# == 0)); then
    set -- "$HERE"/results/*/
fi

for dir in "$@"; do
    dir="${dir%/}"
    [[ -d $dir/raw ]] || continue
    pin="$(grep -o ' PIN=[01]' "$dir/env.txt" 2> /dev/null | head -n1 || true)"
    pin="${pin# }"
    # The handshake rows are pinned or not by HS_PIN, whatever PIN says.
    hs_pin="$(grep -o 'HS_PIN=[01]' "$dir/env.txt" 2> /dev/null | head -n1 || true)"
    hs_pin="${hs_pin#HS_}"
    for f in "$dir"/raw/*.txt; do
        b="$(basename "$f" .txt)"
        case "$b" in
            mtls-h[12]-*) sc="${b:0:7}" ;;
            handshake-*) sc=handshake ;;
            h[12]-*) sc="${b:0:2}" ;;
            *) continue ;;
        esac
        line="$(grep '^# harness:' "$f" || true)"
        [[ -n $line ]] || continue
        # h1-weft.txt (one round) or h1-weft-r2.txt (round 2 of a ROUNDS run): each
        # round counts as a run of its own.
        rest="${b#"$sc"-}"
        px="${rest%-r[0-9]*}"
        round=""
        [[ $rest != "$px" ]] && round="/${rest##*-}"
        row_pin="${pin:-PIN=?}"
        [[ $sc == handshake ]] && row_pin="${hs_pin:-PIN=?}"
        echo "$(basename "$dir")$round $row_pin $sc $px ${line#\# harness: }"
    done
done | awk -v noise_max="${NOISE_MAX:-10}" '
    # The row every ratio of a scenario is to.
    function ref(sc) {
        if (sc ~ /^mtls-/) return "haproxy-tls-pair"
        if (sc == "handshake") return "rustls-alone"
        return "haproxy"
    }
    # mawk has no asorti: keys of arr into out[1..n], sorted.
    function keys_sorted(arr, out,    k, n, i, j, t) {
        n = 0
        for (k in arr) out[++n] = k
        for (i = 2; i <= n; i++) {
            t = out[i]
            for (j = i - 1; j >= 1 && out[j] > t; j--) out[j + 1] = out[j]
            out[j + 1] = t
        }
        return n
    }
    {
        run = $1; pin = $2; sc = $3; px = $4
        for (i = 5; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        key = run SUBSEP sc SUBSEP px
        rps[key] = v["rps"]; p99[key] = v["p99_us"]; cpu[key] = v["proc_cpu_pct"]
        peak[key] = v["peak_rss_kb"]; idle[key] = v["idle_rss_kb"]; other[key] = v["other_cpu_pct"]
        pinof[run, sc] = pin; runs[run] = 1; rows[sc SUBSEP px] = 1
    }
    END {
        printf "%-9s %-16s %-6s %-18s %8s %8s %8s %8s %8s %8s %7s\n", "scen", "proxy", "pin", "run", "req/s", "rps/ha", "p99/ha", "core/ha", "idleMB", "peakMB", "other%"
        n = keys_sorted(rows, rk)
        m = keys_sorted(runs, rr)
        for (i = 1; i <= n; i++) {
            split(rk[i], a, SUBSEP); sc = a[1]; px = a[2]
            for (p = 1; p >= 0; p--) {
                cnt = 0; lo1 = lo2 = lo3 = 1e9; hi1 = hi2 = hi3 = -1
                for (j = 1; j <= m; j++) {
                    r = rr[j]
                    if (pinof[r, sc] != "PIN=" p) continue
                    k = r SUBSEP sc SUBSEP px; h = r SUBSEP sc SUBSEP ref(sc)
                    if (!(k in rps) || !(h in rps) || rps[h] == 0 || p99[h] == 0) continue
                    r1 = rps[k] / rps[h]; r2 = p99[k] / p99[h]
                    pc = (cpu[k] > 0 && cpu[h] > 0) ? (rps[k] / cpu[k]) / (rps[h] / cpu[h]) : 0
                    noisy = (other[k] + 0 > noise_max || other[h] + 0 > noise_max)
                    printf "%-9s %-16s %-6s %-18s %8d %8.2f %8.2f %8.2f %8s %8s %7s%s\n", sc, px, "PIN=" p, r, rps[k], r1, r2, pc,
                        (idle[k] == "-" ? "-" : sprintf("%.1f", idle[k] / 1024)), (peak[k] == "-" ? "-" : sprintf("%.1f", peak[k] / 1024)), other[k],
                        (noisy ? "  noisy: not in range" : "")
                    if (noisy) continue
                    cnt++
                    if (r1 < lo1) lo1 = r1; if (r1 > hi1) hi1 = r1
                    if (r2 < lo2) lo2 = r2; if (r2 > hi2) hi2 = r2
                    if (pc < lo3) lo3 = pc; if (pc > hi3) hi3 = pc
                }
                if (cnt > 1)
                    printf "%-9s %-16s %-6s %-18s %8s %8s %8s %8s\n", sc, px, "PIN=" p, "range (" cnt " runs)", "",
                        sprintf("%.2f-%.2f", lo1, hi1), sprintf("%.2f-%.2f", lo2, hi2), sprintf("%.2f-%.2f", lo3, hi3)
            }
        }
    }'
