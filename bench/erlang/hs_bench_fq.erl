%% Local vs fully-qualified (remote, export-table) call of the same function.
-module(hs_bench_fq).
-export([local_loop/2, remote_loop/2, f/1]).

local_loop(0, Acc) -> Acc;
local_loop(N, Acc) -> local_loop(N - 1, f(Acc)).

remote_loop(0, Acc) -> Acc;
remote_loop(N, Acc) -> remote_loop(N - 1, ?MODULE:f(Acc)).

f(X) -> X + 1.
