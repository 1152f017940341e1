# The GPU checks of one lent machine, in order of priority; each step writes its output under $OUT.
# bash benchmarks/gpu_check.sh   (OUT=folder for the outputs)
set -o pipefail; export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/graphviz*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -3
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import nasflow, torch; print(nasflow.__file__, torch.__version__)"
python3 -m nasflow list models 2>&1 | head -4
python3 -m pytest tests/test_inference.py tests/test_cudagraph.py -p no:cacheprovider -rs 2>&1 | tail -15 | tee $OUT/pytest.txt
python3 benchmarks/gpu_speed.py --json $OUT/gpu.json 2>&1 | tee $OUT/gpu.txt
python3 benchmarks/search_speed.py --device cuda --model ruas --size 320 --steps 10 --warmup 3 --compare-before --hypergradients first_order,finite_difference 2>&1 | tail -9 | tee $OUT/search.txt
python3 benchmarks/search_speed.py --device cuda --model ruas --size 320 --steps 10 --warmup 3 --memory-format channels_last --hypergradients first_order,finite_difference 2>&1 | tail -6 | tee -a $OUT/search.txt
timeout 150 python3 benchmarks/cuda_check.py 2>&1 | tail -12 | tee $OUT/cuda_check.txt
( time timeout 150 python3 -m nasflow run tasks/ruas.yaml --set device=cuda --out /tmp/r --quiet ) 2>&1 | tail -8 | tee $OUT/ruas_cuda.txt
timeout 200 python3 benchmarks/gpu_speed.py --compile --repeats 20 2>&1 | grep -i "compile\|variant\|---" | tee $OUT/compile.txt
