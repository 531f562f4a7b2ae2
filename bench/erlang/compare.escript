#!/usr/bin/env escript
%% -*- erlang -*-
%%! +P 524288 -noinput
%%
%% Erlang/OTP half of the hotswap benchmark comparison.
%%
%%   escript bench/erlang/compare.escript              # every measure
%%   escript bench/erlang/compare.escript m1 m2 ...    # only these
%%
%% stdout: exactly one line "<measure> <value> <unit>" per measure.
%% stderr: diagnostics.  Every measure repeats its workload and reports
%% the median.  Helper modules (hs_bench_*.erl next to this file) are
%% compiled at startup into a temp dir; all hot loops run in them.
-mode(compile).

%% ---------------------------------------------------------------------------
%% measure groups: {GroupName, [OutputName], Fun, TimeoutMs}
groups() ->
    [{spawn_exit_rate, [spawn_exit_rate], fun m_spawn_exit/0, 60000},
     {idle_process_memory, [idle_process_memory], fun m_idle_memory/0, 60000},
     {message_throughput, [message_throughput], fun m_msg/0, 60000},
     {module_load, [module_load], fun m_module_load/0, 60000},
     {purge_100k_idle, [purge_100k_idle], fun m_purge/0, 60000},
     {fq_call_overhead, [fq_call_overhead], fun m_fq/0, 60000},
     {gen_server_call, [gen_server_call_rtt, gen_server_call_p99],
      fun m_gs_rtt/0, 60000},
     {gen_server_calls, [gen_server_calls_1client, gen_server_calls_2clients],
      fun m_gs_calls/0, 60000},
     {gen_server_cast_throughput, [gen_server_cast_throughput],
      fun m_gs_cast/0, 60000},
     {gen_server_idle_memory, [gen_server_idle_memory],
      fun m_gs_idle_memory/0, 60000},
     {gen_server_upgrade, [gen_server_upgrade_1000, gen_server_upgrade_10000,
                           gen_server_upgrade_100000],
      fun m_upgrade/0, 120000},
     {node_stop_10k, [node_stop_10k], fun m_node_stop/0, 120000},
     {child_restart, [child_restart], fun m_child_restart/0, 60000},
     {release_upgrade, [release_upgrade_1000, release_upgrade_10000,
                        release_upgrade_100000],
      fun m_release/0, 600000},
     {idle_node_cpu, [idle_node_cpu], fun m_idle_cpu/0, 60000}].

main(Args) ->
    Wanted = [list_to_atom(A) || A <- Args],
    Known = lists:append([[G | Ns] || {G, Ns, _, _} <- groups()]),
    [log("unknown measure ~p (known: ~p)", [W, Known])
     || W <- Wanted, not lists:member(W, Known)],
    T0 = erlang:monotonic_time(millisecond),
    %% keep stdout machine-readable: logger output goes to stderr
    _ = logger:remove_handler(default),
    ok = logger:add_handler(default, logger_std_h,
                            #{config => #{type => standard_error}}),
    Dir = try setup()
          catch C:R:St ->
                  log("setup failed: ~p:~p~n~p", [C, R, St]),
                  halt(0)
          end,
    try
        [run_group(G, Wanted) || G <- groups()]
    after
        cleanup(Dir)
    end,
    log("total wall time ~.1f s",
        [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    halt(0).

run_group({G, Names, Fun, Timeout}, Wanted) ->
    Print = case Wanted of
                [] -> Names;
                _ ->
                    case lists:member(G, Wanted) of
                        true -> Names;
                        false -> [N || N <- Names, lists:member(N, Wanted)]
                    end
            end,
    case Print of
        [] -> skip;
        _ -> run_group(G, Print, Fun, Timeout)
    end.

run_group(G, Print, Fun, Timeout) ->
    log("running ~p ...", [G]),
    T0 = erlang:monotonic_time(millisecond),
    Self = self(),
    {Pid, Ref} =
        spawn_monitor(
          fun() ->
                  Res = try {ok, Fun()}
                        catch C:R:St -> {error, {C, R, St}}
                        end,
                  Self ! {result, self(), Res}
          end),
    receive
        {result, Pid, {ok, Lines}} ->
            erlang:demonitor(Ref, [flush]),
            [out(N, V, U) || {N, V, U} <- Lines, lists:member(N, Print)],
            Missing = Print -- [N || {N, _, _} <- Lines],
            [log("measure ~p produced no value", [M]) || M <- Missing],
            log("~p done in ~p ms",
                [G, erlang:monotonic_time(millisecond) - T0]);
        {result, Pid, {error, E}} ->
            erlang:demonitor(Ref, [flush]),
            log("measure ~p FAILED: ~p", [G, E]);
        {'DOWN', Ref, process, Pid, Reason} ->
            log("measure ~p crashed: ~p", [G, Reason])
    after Timeout ->
            exit(Pid, kill),
            erlang:demonitor(Ref, [flush]),
            log("measure ~p TIMED OUT after ~p ms", [G, Timeout])
    end,
    %% let leftovers of a failed measure die before the next one
    flush().

flush() -> receive _ -> flush() after 0 -> ok end.

out(Name, V, Unit) ->
    io:format("~s ~s ~s~n", [Name, fmt(V), Unit]).

fmt(V) when is_integer(V) -> integer_to_list(V);
fmt(V) when is_float(V) -> io_lib:format("~.3f", [V]).

log(Fmt, Args) -> io:format(standard_error, "# " ++ Fmt ++ "~n", Args).

%% ---------------------------------------------------------------------------
%% setup: compile helper modules into a temp dir

script_dir() -> filename:dirname(filename:absname(escript:script_name())).

setup() ->
    Src = script_dir(),
    Dir = filename:join("/tmp", "hs_bench_erl_" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Opts = [{outdir, Dir}, report_errors, report_warnings, return_errors],
    [{ok, _} = compile:file(filename:join(Src, M), Opts)
     || M <- ["hs_bench_help", "hs_bench_fq", "hs_bench_gs", "hs_bench_sup",
              "hs_bench_rel"]],
    App = {application, hs_bench_node,
           [{description, "hotswap bench node"}, {vsn, "1"},
            {modules, [hs_bench_gs, hs_bench_sup]}, {registered, []},
            {applications, [kernel, stdlib]},
            {mod, {hs_bench_sup, []}}]},
    ok = file:write_file(filename:join(Dir, "hs_bench_node.app"),
                         io_lib:format("~p.~n", [App])),
    true = code:add_patha(Dir),
    [{module, M} = code:ensure_loaded(M)
     || M <- [hs_bench_help, hs_bench_fq, hs_bench_gs, hs_bench_sup]],
    %% binary-only modules (never on the code path)
    BOpts = [binary, report_errors, return_errors],
    {ok, hs_bench_mod, ModBin} =
        compile:file(filename:join(Src, "hs_bench_mod"), BOpts),
    {ok, hs_bench_up, Up1} =
        compile:file(filename:join(Src, "hs_bench_up"), BOpts),
    {ok, hs_bench_up, Up2} =
        compile:file(filename:join(Src, "hs_bench_up"), [{d, 'V2'} | BOpts]),
    persistent_term:put(hs_bench_bins,
                        #{mod => ModBin, up1 => Up1, up2 => Up2, dir => Dir}),
    Dir.

cleanup(Dir) ->
    _ = file:del_dir_r(Dir),
    ok.

bin(K) -> maps:get(K, persistent_term:get(hs_bench_bins)).

%% ---------------------------------------------------------------------------
%% utilities

median(L) ->
    S = lists:sort(L),
    N = length(S),
    case N rem 2 of
        1 -> lists:nth(N div 2 + 1, S);
        0 -> (lists:nth(N div 2, S) + lists:nth(N div 2 + 1, S)) / 2
    end.

%% percentile of an already sorted list (nearest rank)
percentile(Sorted, P) ->
    N = length(Sorted),
    K = max(1, min(N, ceil(P * N))),
    lists:nth(K, Sorted).

now_ns() -> erlang:monotonic_time(nanosecond).

%% Run Fun in a fresh process (clean heap and mailbox), return its value.
in_proc(Fun) -> in_proc(Fun, []).

in_proc(Fun, Opts) ->
    {Pid, Ref} = spawn_opt(fun() -> exit({ok, Fun()}) end, [monitor | Opts]),
    receive
        {'DOWN', Ref, process, Pid, {ok, V}} -> V;
        {'DOWN', Ref, process, Pid, R} -> error({worker_failed, R})
    end.

rounds(N, Fun) -> [Fun() || _ <- lists:seq(1, N)].

%% wait until the process count is back to (at most) Base
wait_procs(Base) -> wait_procs(Base, 30000).
wait_procs(Base, Left) ->
    case erlang:system_info(process_count) of
        C when C =< Base -> ok;
        C when Left =< 0 -> error({processes_left, C - Base});
        _ -> timer:sleep(2), wait_procs(Base, Left - 2)
    end.

purge_all(Mod) ->
    _ = code:purge(Mod),
    _ = code:delete(Mod),
    _ = code:purge(Mod),
    ok.

load(Mod, Bin) ->
    {module, Mod} = code:load_binary(Mod, atom_to_list(Mod) ++ ".erl", Bin),
    ok.

rate(N, Ns) -> round(N / (Ns / 1.0e9)).

%% ---------------------------------------------------------------------------
%% 1. spawn_exit_rate

m_spawn_exit() ->
    N = 200000,
    Base = erlang:system_info(process_count),
    %% The spawner gets 200k 'DOWN' messages; with the default on-heap
    %% message queue every GC of the (fresh, small) spawner copies the
    %% whole queue, which halves the rate.  off_heap is the documented
    %% setting for processes that receive many messages.
    Round = fun(F) ->
                    Ns = in_proc(fun() -> hs_bench_help:F(N) end,
                                 [{message_queue_data, off_heap}]),
                    wait_procs(Base),
                    rate(N, Ns)
            end,
    %% the first rounds pay for the allocators growing; discard two
    _ = [Round(spawn_exit) || _ <- [1, 2]],
    Rs = rounds(7, fun() -> Round(spawn_exit) end),
    log("spawn_exit_rate rounds (spawn_monitor + wait for all DOWN): ~w", [Rs]),
    Ps = rounds(5, fun() -> Round(spawn_exit_poll) end),
    log("info: plain spawn + poll process_count instead of monitors: "
        "median ~p per_s ~p", [median(Ps), Ps]),
    [{spawn_exit_rate, median(Rs), per_s}].

%% ---------------------------------------------------------------------------
%% 2. idle_process_memory

m_idle_memory() ->
    N = 100000,
    Rs = rounds(5, fun() -> idle_mem_round(N) end),
    log("idle_process_memory rounds: ~w", [Rs]),
    [{idle_process_memory, round(median(Rs)), bytes}].

idle_mem_round(N) ->
    Tab = ets:new(pids, [set, public]),
    Base = erlang:system_info(process_count),
    try
        mem_round(N, Tab, fun() -> hs_bench_help:spawn_idle(N, Tab) end)
    after
        hs_bench_help:stop_idle(Tab),
        ets:delete(Tab),
        wait_procs(Base)
    end.

%% Memory of processes that exited earlier is released with a delay; wait
%% (up to Tries x 20 ms) until two readings 20 ms apart agree within 64 KiB.
settle_memory(_Prev, 0) -> ok;
settle_memory(Prev, Tries) ->
    timer:sleep(20),
    case erlang:memory(processes) of
        M when abs(M - Prev) < 65536 -> ok;
        M -> settle_memory(M, Tries - 1)
    end.

%% Per-process memory of the N processes Start() creates (their pids are
%% put into the ETS table Tab, so the spawner's heap does not grow).
%% Reported: erlang:memory(processes) delta / N.  Logged for reference:
%% erlang:memory(total) delta / N and mean process_info(P, memory).
mem_round(N, Tab, Start) ->
    garbage_collect(),
    settle_memory(erlang:memory(processes), 50),
    M0 = erlang:memory([processes, total]),
    Start(),
    timer:sleep(50),
    garbage_collect(),
    M1 = erlang:memory([processes, total]),
    Delta = fun(K) -> (proplists:get_value(K, M1) - proplists:get_value(K, M0)) / N end,
    PI = ets:foldl(fun({P}, A) ->
                           case process_info(P, memory) of
                               {memory, X} -> A + X;
                               undefined -> A
                           end
                   end, 0, Tab) / N,
    log("  memory per process: processes ~.1f, total ~.1f, "
        "process_info(memory) ~.1f bytes", [Delta(processes), Delta(total), PI]),
    Delta(processes).

%% ---------------------------------------------------------------------------
%% 3. message_throughput

m_msg() ->
    N = 2000000,
    Round = fun() ->
                    rate(N, in_proc(fun() -> hs_bench_help:msg_throughput(N) end))
            end,
    _Warmup = Round(),
    Rs = rounds(7, Round),
    log("message_throughput rounds: ~w", [Rs]),
    [{message_throughput, median(Rs), per_s}].

%% ---------------------------------------------------------------------------
%% 4. module_load

m_module_load() ->
    Bin = bin(mod),
    purge_all(hs_bench_mod),
    %% warm-up
    [begin load(hs_bench_mod, Bin), purge_all(hs_bench_mod) end
     || _ <- lists:seq(1, 10)],
    Ts = rounds(201, fun() ->
                             T0 = now_ns(),
                             {module, hs_bench_mod} =
                                 code:load_binary(hs_bench_mod, "hs_bench_mod.erl", Bin),
                             T1 = now_ns(),
                             purge_all(hs_bench_mod),
                             (T1 - T0) / 1000
                     end),
    log("module_load: min ~.1f max ~.1f us", [lists:min(Ts), lists:max(Ts)]),
    [{module_load, median(Ts) * 1.0, us}].

%% ---------------------------------------------------------------------------
%% 5. purge_100k_idle

%% idle_node_cpu (issue 16): CPU time the VM uses with 10 000 idle processes over 10 s
%% (statistics(runtime): all of the runtime system's threads), in percent of one core.
m_idle_cpu() ->
    N = 10000,
    Tab = ets:new(pids, [set, public]),
    Base = erlang:system_info(process_count),
    hs_bench_help:spawn_idle(N, Tab),
    try
        timer:sleep(200),
        {R0, _} = statistics(runtime),
        T0 = now_ns(),
        timer:sleep(10000),
        {R1, _} = statistics(runtime),
        T1 = now_ns(),
        Secs = (T1 - T0) / 1.0e9,
        log("idle_node_cpu: ~w ms of CPU in ~.2f s", [R1 - R0, Secs]),
        [{idle_node_cpu, (R1 - R0) / 10 / Secs, pct_core}]
    after
        hs_bench_help:stop_idle(Tab),
        ets:delete(Tab),
        wait_procs(Base)
    end.

m_purge() ->
    N = 100000,
    Bin = bin(mod),
    Tab = ets:new(pids, [set, public]),
    Base = erlang:system_info(process_count),
    hs_bench_help:spawn_idle(N, Tab),
    try
        Ts = rounds(7, fun() ->
                               purge_all(hs_bench_mod),
                               load(hs_bench_mod, Bin),
                               load(hs_bench_mod, Bin),
                               true = erlang:check_old_code(hs_bench_mod),
                               T0 = now_ns(),
                               _ = code:purge(hs_bench_mod),
                               T1 = now_ns(),
                               false = erlang:check_old_code(hs_bench_mod),
                               (T1 - T0) / 1000
                       end),
        log("purge_100k_idle rounds (us): ~w", [Ts]),
        %% sanity: idle processes survived
        N = ets:info(Tab, size),
        true = lists:all(fun({P}) -> is_process_alive(P) end, ets:tab2list(Tab)),
        [{purge_100k_idle, median(Ts) * 1.0, us}]
    after
        hs_bench_help:stop_idle(Tab),
        ets:delete(Tab),
        purge_all(hs_bench_mod),
        wait_procs(Base)
    end.

%% ---------------------------------------------------------------------------
%% 6. fq_call_overhead

m_fq() ->
    N = 50000000,
    Rs = rounds(5, fun() ->
                           in_proc(fun() ->
                                           %% ABBA order to cancel drift
                                           L1 = fq_time(local_loop, N),
                                           R1 = fq_time(remote_loop, N),
                                           R2 = fq_time(remote_loop, N),
                                           L2 = fq_time(local_loop, N),
                                           L = (L1 + L2) / 2,
                                           R = (R1 + R2) / 2,
                                           log("fq: local ~.3f ns remote ~.3f ns", [L, R]),
                                           R - L
                                   end)
                   end),
    [{fq_call_overhead, median(Rs) * 1.0, ns}].

%% ns per iteration of hs_bench_fq:Loop(N, 0)
fq_time(Loop, N) ->
    T0 = now_ns(),
    N = hs_bench_fq:Loop(N, 0),
    (now_ns() - T0) / N.

%% ---------------------------------------------------------------------------
%% 7. gen_server_call_rtt / p99

with_gs(State, Fun) ->
    {ok, S} = hs_bench_gs:start(State),
    try Fun(S) after exit(S, kill) end.

m_gs_rtt() ->
    N = 200000,
    Rs = with_gs(0, fun(S) ->
                            rounds(5, fun() ->
                                              in_proc(fun() ->
                                                              Sorted = lists:sort(hs_bench_help:timed_calls(S, N)),
                                                              {percentile(Sorted, 0.5),
                                                               percentile(Sorted, 0.99)}
                                                      end)
                                      end)
                    end),
    log("gen_server_call rounds {median, p99} ns: ~w", [Rs]),
    [{gen_server_call_rtt, median([M || {M, _} <- Rs]), ns},
     {gen_server_call_p99, median([P || {_, P} <- Rs]), ns}].

%% ---------------------------------------------------------------------------
%% 8. gen_server_calls_1client / 2clients

m_gs_calls() ->
    N = 200000,
    with_gs(0, fun(S) ->
                       R1 = rounds(5, fun() -> calls_round(S, 1, N) end),
                       R2 = rounds(5, fun() -> calls_round(S, 2, N) end),
                       log("gen_server_calls 1 client: ~w", [R1]),
                       log("gen_server_calls 2 clients: ~w", [R2]),
                       [{gen_server_calls_1client, median(R1), per_s},
                        {gen_server_calls_2clients, median(R2), per_s}]
               end).

calls_round(S, C, N) ->
    Self = self(),
    Go = make_ref(),
    Pids = [spawn_link(fun() ->
                               receive Go -> ok end,
                               hs_bench_help:calls(S, N),
                               Self ! {done, self()}
                       end) || _ <- lists:seq(1, C)],
    T0 = now_ns(),
    [P ! Go || P <- Pids],
    [receive {done, P} -> ok end || P <- Pids],
    rate(C * N, now_ns() - T0).

%% ---------------------------------------------------------------------------
%% 9. gen_server_cast_throughput

m_gs_cast() ->
    N = 2000000,
    Rs = rounds(5, fun() ->
                           with_gs(0, fun(S) ->
                                              in_proc(fun() ->
                                                              T0 = now_ns(),
                                                              hs_bench_help:casts(S, N),
                                                              N = gen_server:call(S, get, infinity),
                                                              rate(N, now_ns() - T0)
                                                      end)
                                      end)
                   end),
    log("gen_server_cast_throughput rounds: ~w", [Rs]),
    [{gen_server_cast_throughput, median(Rs), per_s}].

%% ---------------------------------------------------------------------------
%% 10. gen_server_idle_memory

m_gs_idle_memory() ->
    N = 100000,
    Rs = rounds(3, fun() -> in_proc(fun() -> gs_mem_round(N) end) end),
    log("gen_server_idle_memory rounds: ~w", [Rs]),
    [{gen_server_idle_memory, round(median(Rs)), bytes}].

gs_mem_round(N) ->
    Tab = ets:new(pids, [set, public]),
    Base = erlang:system_info(process_count),
    try
        mem_round(N, Tab, fun() -> gs_start_into(N, Tab) end)
    after
        ets:foldl(fun({P}, A) -> exit(P, kill), A end, ok, Tab),
        ets:delete(Tab),
        wait_procs(Base)
    end.

gs_start_into(0, _) -> ok;
gs_start_into(N, Tab) ->
    {ok, P} = hs_bench_gs:start(N),
    ets:insert(Tab, {P}),
    gs_start_into(N - 1, Tab).

%% ---------------------------------------------------------------------------
%% 11. gen_server_upgrade_N

m_upgrade() ->
    lists:append(
      [begin
           Rs = rounds(R, fun() -> in_proc(fun() -> upgrade_round(N) end) end),
           log("gen_server_upgrade_~p rounds (us/process): ~w", [N, Rs]),
           [{list_to_atom("gen_server_upgrade_" ++ integer_to_list(N)),
             median(Rs) * 1.0, us_per_process}]
       end || {N, R} <- [{1000, 5}, {10000, 5}, {100000, 3}]]).

upgrade_round(N) ->
    Base = erlang:system_info(process_count),
    purge_all(hs_bench_up),
    load(hs_bench_up, bin(up1)),
    IPs = hs_bench_help:start_many(hs_bench_up, N, []),
    try
        Ns = hs_bench_help:upgrade(IPs, hs_bench_up, bin(up2)),
        %% verify every state was transformed (and code_change ran once)
        Bad = [I || {I, P} <- IPs, sys:get_state(P) =/= 2 * I],
        [] == Bad orelse error({not_upgraded, length(Bad)}),
        Ns / 1000 / N
    after
        [exit(P, kill) || {_, P} <- IPs],
        wait_procs(Base),
        purge_all(hs_bench_up)
    end.

%% ---------------------------------------------------------------------------
%% 12. node_stop_10k

m_node_stop() ->
    Rs = rounds(3, fun() -> node_stop_round(10000) end),
    log("node_stop_10k rounds {total ms, app tree shutdown ms}: ~w", [Rs]),
    Bs = rounds(3, fun() -> node_stop_round(0) end),
    log("info: same with 0 children (fixed init:stop cost): ~w", [Bs]),
    log("info: node_stop_10k median tree shutdown part ~.3f ms, "
        "0-children total ~.3f ms",
        [median([A || {_, A} <- Rs]) * 1.0, median([T || {T, _} <- Bs]) * 1.0]),
    [{node_stop_10k, median([T || {T, _} <- Rs]) * 1.0, ms}].

%% Start a fresh `erl -noshell` whose hs_bench_node application has a top
%% supervisor with NChildren gen_server workers; when it prints "ready",
%% write a line to its stdin, on which it calls init:stop(); measure until
%% the OS process has exited (exit_status from the port).
%% Returns {TotalMs, AppTreeShutdownMs}.
node_stop_round(NChildren) ->
    Erl = case os:find_executable("erl", filename:join(code:root_dir(), "bin")) of
              false -> os:find_executable("erl");
              E -> E
          end,
    Dir = bin(dir),
    Expr = "{ok, _} = application:ensure_all_started(hs_bench_node), "
           "io:put_chars(\"ready\\n\"), "
           "_ = io:get_line(''), "
           "init:stop().",
    Port = open_port({spawn_executable, Erl},
                     [{args, ["-noshell", "-pa", Dir, "-eval", Expr]},
                      {env, [{"HS_BENCH_CHILDREN", integer_to_list(NChildren)}]},
                      {line, 1024}, exit_status, use_stdio, binary]),
    wait_ready(Port),
    T0 = now_ns(),
    true = port_command(Port, <<"stop\n">>),
    {Status, Lines} = wait_exit(Port, []),
    T1 = now_ns(),
    Status == 0 orelse log("child node exit status ~p", [Status]),
    Stamp = fun(Key) ->
                    case [binary_to_integer(V) || <<K:(byte_size(Key))/binary,
                                                    " ", V/binary>> <- Lines,
                                                  K =:= Key] of
                        [V] -> V;
                        _ -> undefined
                    end
            end,
    App = case {Stamp(<<"prep_stop">>), Stamp(<<"app_stopped">>)} of
              {A0, A1} when is_integer(A0), is_integer(A1) -> (A1 - A0) / 1000;
              _ -> undefined
          end,
    {(T1 - T0) / 1.0e6, App}.

wait_ready(Port) ->
    receive
        {Port, {data, {eol, <<"ready">>}}} -> ok;
        {Port, {data, {_, Line}}} ->
            log("child: ~s", [Line]), wait_ready(Port);
        {Port, {exit_status, S}} -> error({child_exited_early, S})
    after 60000 -> error(child_not_ready)
    end.

wait_exit(Port, Acc) ->
    receive
        {Port, {exit_status, S}} -> {S, lists:reverse(Acc)};
        {Port, {data, {eol, <<"prep_stop ", _/binary>> = L}}} ->
            wait_exit(Port, [L | Acc]);
        {Port, {data, {eol, <<"app_stopped ", _/binary>> = L}}} ->
            wait_exit(Port, [L | Acc]);
        {Port, {data, {_, Line}}} ->
            log("child: ~s", [Line]), wait_exit(Port, Acc)
    after 60000 -> error(child_did_not_exit)
    end.

%% ---------------------------------------------------------------------------
%% 13. child_restart

m_child_restart() ->
    %% Supervisor reports (one per kill) are switched off while measuring;
    %% with the default handler on, each restart also pays for formatting
    %% and printing a report.
    #{level := Level} = logger:get_primary_config(),
    ok = logger:set_primary_config(level, critical),
    Rs = try child_restart_rounds()
         after logger:set_primary_config(level, Level)
         end,
    [{child_restart, median(Rs) * 1.0, us}].

child_restart_rounds() ->
    in_proc(fun() ->
                         {ok, Sup} = hs_bench_sup:start_link({restart, self()}),
                         W0 = receive {started, P} -> P end,
                         {_, Ts} = lists:foldl(
                                     fun(_, {W, Acc}) ->
                                             T0 = now_ns(),
                                             exit(W, kill),
                                             receive {started, W2} ->
                                                     T1 = now_ns(),
                                                     {W2, [(T1 - T0) / 1000 | Acc]}
                                             after 5000 -> error(no_restart)
                                             end
                                     end, {W0, []}, lists:seq(1, 1001)),
                         unlink(Sup),
                         exit(Sup, kill),
                         Ts
                 end).

%% ---------------------------------------------------------------------------
%% release_upgrade_N: install_release of a relup that updates three gen_server
%% modules ({update, M, {advanced, []}}) with N servers spread over them, evaluated by
%% release_handler; see hs_bench_rel.erl for how the release is built.  Per server:
%% the install_release call's time / N.  Median of 5 (1k), 3 (10k), 2 (100k) rounds
%% after one warm-up of 1000.
m_release() ->
    Src = script_dir(),
    _ = in_proc(fun() -> hs_bench_rel:round(1000, Src) end),
    lists:map(
      fun({N, R}) ->
              Rs = rounds(R, fun() ->
                                     {Ns, Got} = in_proc(fun() -> hs_bench_rel:round(N, Src) end),
                                     Ns / 1000 / Got
                             end),
              log("release_upgrade_~p rounds (us/server): ~w", [N, Rs]),
              {list_to_atom("release_upgrade_" ++ integer_to_list(N)), median(Rs),
               us_per_process}
      end, [{1000, 5}, {10000, 3}, {100000, 2}]).
